"""Rules as the evaluator sees them: condition tests, which events a rule covers, and a cache refreshed cheaply."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from auth_api.alerts.models import AlertRule

RULES = AlertRule.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    owner_id: int | None
    model: str
    asset: str | None
    condition: dict[str, Any]
    severity: str
    channels: tuple[str, ...]
    webhook_url: str | None
    webhook_secret: str | None
    cooldown_s: int
    scope: str  # own | all | builtin

    @classmethod
    def from_row(cls, row: Any) -> Rule:
        return cls(id=row.id, name=row.name, owner_id=row.owner_id, model=row.model, asset=row.asset,
                   condition=dict(row.condition or {}), severity=row.severity, channels=tuple(row.channels or ()),
                   webhook_url=row.webhook_url, webhook_secret=row.webhook_secret, cooldown_s=int(row.cooldown_s),
                   scope=row.scope)

    def covers(self, event: dict[str, Any]) -> bool:
        """Whether the event is in this rule's reach (model, asset, whose prediction), before its condition."""
        if event.get("model") != self.model or (self.asset is not None and event.get("asset") != self.asset):
            return False
        return self.scope in ("all", "builtin") or (self.owner_id is not None and event.get("user_id") == self.owner_id)

    def recipient(self, event: dict[str, Any]) -> int | None:
        """Whose alert it is: the event's user for a built-in rule, else the rule's owner."""
        return event.get("user_id") if self.scope == "builtin" else self.owner_id


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def holds(condition: dict[str, Any], event: dict[str, Any]) -> bool:
    """Every given test holds (AND); a test on a missing field does not."""
    label = event.get("label")
    if "label_in" in condition and (label is None or str(label) not in condition["label_in"]):
        return False
    if "label_not_in" in condition and (label is None or str(label) in condition["label_not_in"]):
        return False
    for key, field, above in (("probability_gt", "probability", True), ("score_lt", "score", False),
                              ("value_gt", "value", True)):
        if key in condition:
            v = _num(event.get(field))
            if v is None or (v <= condition[key] if above else v >= condition[key]):
                return False
    return True


def load(conn: Connection, models: Iterable[str] | None = None) -> list[Rule]:
    """Enabled rules (on ``models`` when given)."""
    stmt = sa.select(RULES).where(RULES.c.enabled.is_(True))
    if models is not None:
        stmt = stmt.where(RULES.c.model.in_(sorted(set(models))))
    return [Rule.from_row(r) for r in conn.execute(stmt)]


class RuleCache:
    """Rules by model, reloaded only when the table changed: one tiny aggregate query per batch, never one per row."""

    def __init__(self) -> None:
        self._stamp: tuple[Any, ...] | None = None
        self._by_model: dict[str, list[Rule]] = {}
        self._lock = threading.Lock()

    def rules(self, conn: Connection, models: Sequence[str]) -> list[Rule]:
        stamp = tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(RULES.c.id), sa.func.max(RULES.c.updated_at))
                                   .select_from(RULES)).one())
        with self._lock:
            if stamp != self._stamp:
                by_model: dict[str, list[Rule]] = {}
                for rule in load(conn):
                    by_model.setdefault(rule.model, []).append(rule)
                self._by_model, self._stamp = by_model, stamp
            return [r for m in set(models) for r in self._by_model.get(m, ())]
