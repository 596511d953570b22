"""The roles and what each may do: the one table authorization (authn.ROLE_RANK, deps.require_role) and GET /roles read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleSpec:
    name: str
    rank: int  # a role may do everything the roles of lower rank may
    description: str
    permissions: tuple[str, ...]  # what this role adds to the ranks below it


ROLES: tuple[RoleSpec, ...] = (
    # A tester ranks with users (predicts, keeps history) but uploads no data: it lists, reads and trains on the
    # sample datasets only (403 sample_data_only). Same rank, so it adds nothing to the roles above it.
    RoleSpec("tester", 0, "Tries the stack on sample data: predictions, own history, sample datasets and jobs on them.",
             ("predict", "history:own", "feedback", "dashboards", "api_keys:own", "account:own", "datasets:samples",
              "jobs:samples")),
    RoleSpec("user", 0, "Uses the models: predictions, own history, feedback, dashboards, own API keys.",
             ("predict", "history:own", "feedback", "dashboards", "api_keys:own", "account:own", "datasets:samples",
              "jobs:samples", "datasets:own", "jobs:own")),
    RoleSpec("engineer", 1, "Publishes and manages model versions besides everything a user may do.",
             ("models:publish", "models:activate", "models:delete", "models:read")),
    RoleSpec("admin", 2, "Administers accounts besides everything an engineer may do.",
             ("users:list", "users:create", "users:update", "users:delete", "api_keys:any", "history:any")),
)

ROLE_RANK: dict[str, int] = {r.name: r.rank for r in ROLES}


def permissions(role: str) -> list[str]:
    """Everything ``role`` may do, its own permissions and those of every lower rank."""
    rank = ROLE_RANK[role]
    return list(dict.fromkeys(p for r in ROLES if r.rank < rank or r.name == role for p in r.permissions))
