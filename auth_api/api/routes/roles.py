"""The roles and what each may do, read from the table authorization itself uses (auth_api/roles.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from auth_api import roles
from auth_api.api.strict_query import no_unknown_query
from auth_api.deps import CurrentPrincipal
from auth_api.models import RolePublic

router = APIRouter(prefix="/roles", tags=["users"], dependencies=[Depends(no_unknown_query)])


@router.get("", response_model=list[RolePublic])
def list_roles(_: CurrentPrincipal) -> list[RolePublic]:
    """Every role by rank; ``permissions`` includes what the lower ranks may do."""
    return [RolePublic(name=r.name, rank=r.rank, description=r.description, permissions=roles.permissions(r.name))
            for r in roles.ROLES]
