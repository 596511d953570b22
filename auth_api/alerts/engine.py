"""Rule evaluation off the request path: ``evaluate_events`` (any caller's transaction) and ``AlertHook`` (the history
ingester's hook). A rule that fires writes the alert, its email (mail outbox) and its webhook delivery in the caller's
transaction; the cool-down is a conditional upsert, so concurrent evaluators never both fire."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from auth_api.alerts import notify
from auth_api.alerts.models import Alert, AlertCooldown
from auth_api.alerts.rules import RULES, Rule, RuleCache, holds, load
from auth_api.models import utcnow

logger = logging.getLogger(__name__)
ALERTS = Alert.__table__  # type: ignore[attr-defined]
COOLDOWNS = AlertCooldown.__table__  # type: ignore[attr-defined]
EVENT_KEYS = ("model", "version", "label", "probability", "score", "value", "user_id", "asset", "source", "prediction_id")


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


@functools.lru_cache(maxsize=4)
def _cool_statement(dialect: str) -> Any:
    """The cool-down upsert, built once per dialect (bound parameters: rule_id, user_key, asset_key, now, threshold)."""
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(COOLDOWNS).values(
        rule_id=sa.bindparam("rule_id"), user_key=sa.bindparam("user_key"), asset_key=sa.bindparam("asset_key"),
        fired_at=sa.bindparam("now"))
    return ins.on_conflict_do_update(index_elements=["rule_id", "user_key", "asset_key"], set_={"fired_at": ins.excluded.fired_at},
                                     where=COOLDOWNS.c.fired_at <= sa.bindparam("threshold")).returning(COOLDOWNS.c.id)


def _cool(conn: Connection, rule: Rule, user_id: int | None, asset: str | None, now: float) -> bool:
    """Claim the (rule, user, asset) window: True only for the one evaluator whose upsert moved ``fired_at``."""
    res = conn.execute(_cool_statement(conn.dialect.name), {"rule_id": rule.id, "user_key": user_id or 0,
                                                            "asset_key": (asset or "")[:128], "now": now,
                                                            "threshold": now - rule.cooldown_s})
    return res.first() is not None  # a row comes back only when inserted or moved (not rowcount: -1 on PG)


def _by_owner(rules: Sequence[Rule]) -> dict[tuple[str, int | None], list[Rule]]:
    """Rules by (model, owner), None standing for everyone's (scope all, built-in): an event looks at two lists."""
    out: dict[tuple[str, int | None], list[Rule]] = {}
    for r in rules:
        out.setdefault((r.model, None if r.scope in ("all", "builtin") else r.owner_id), []).append(r)
    return out


def _title(rule: Rule, ev: dict[str, Any]) -> str:
    what = f"predicted {ev['label']}" if ev.get("label") is not None else "matched"
    p = f" (p={ev['probability']:.2f})" if isinstance(ev.get("probability"), float) else ""
    on = f" on {ev['asset']}" if ev.get("asset") else ""
    return f"{rule.name}: {ev.get('model')} {what}{p}{on}"[:200]


def _message(rule: Rule, ev: dict[str, Any]) -> str:
    cond = ", ".join(f"{k}={v}" for k, v in rule.condition.items())
    seen = ", ".join(f"{k}={ev[k]}" for k in ("label", "probability", "score", "value") if ev.get(k) is not None)
    return f"Rule '{rule.name}' ({cond}) matched a {ev.get('source') or 'prediction'} of {ev.get('model')}: {seen}."


def _holds(rule: Rule, ev: dict[str, Any]) -> bool:
    try:
        return holds(rule.condition, ev)
    except (TypeError, ValueError, KeyError):  # a condition written behind the API's back: that rule only is skipped
        logger.warning("alert rule %s has an unusable condition %r; skipped", rule.id, rule.condition)
        return False


def fire(conn: Connection, rules: Sequence[Rule], events: Sequence[dict[str, Any]]) -> list[int]:
    """Alerts for every (rule, event) that matches and is out of its cool-down; their ids, in event order."""
    now = time.time()
    created: list[int] = []
    closed: set[tuple[int, Any, Any]] = set()  # windows this call found or made closed: one upsert per window per call
    index = _by_owner(rules)
    for raw in events:
        ev: dict[str, Any] = {k: raw.get(k) for k in EVENT_KEYS}
        mine = index.get((ev["model"], ev["user_id"]), []) if ev["user_id"] is not None else []
        for rule in index.get((ev["model"], None), []) + mine:
            if not rule.covers(ev) or not _holds(rule, ev):
                continue
            window = (rule.id, ev["user_id"], ev["asset"])
            if (window in closed and rule.cooldown_s > 0) or not _cool(conn, rule, ev["user_id"], ev["asset"], now):
                closed.add(window)
                continue
            closed.add(window)
            row = {"user_id": rule.recipient(ev), "rule_id": rule.id, "rule_name": rule.name, "model": ev["model"],
                   "version": None if ev["version"] is None else str(ev["version"])[:16],
                   "asset": None if ev["asset"] is None else str(ev["asset"])[:128], "severity": rule.severity,
                   "title": _title(rule, ev), "message": _message(rule, ev),
                   "label": None if ev["label"] is None else str(ev["label"])[:128],
                   "probability": ev["probability"], "score": ev["score"], "value": ev["value"],
                   "source": None if ev["source"] is None else str(ev["source"])[:64], "prediction_id": ev["prediction_id"],
                   "created_at": utcnow(), "read_at": None}
            alert_id = int(conn.execute(sa.insert(ALERTS).values(**row)).inserted_primary_key[0])  # type: ignore[index]
            created.append(alert_id)
            notify.enqueue(conn, rule, {**row, "id": alert_id})
    return created


def evaluate_events(conn: Connection, events: list[dict[str, Any]]) -> list[int]:
    """Match ``events`` against the enabled rules on their models, in the caller's transaction; the new alert ids."""
    if not events:
        return []
    rules = load(conn, {str(e.get("model")) for e in events})
    return fire(conn, rules, events) if rules else []


def ensure_builtin_rule(conn: Connection, key: str, model: str, condition: dict[str, Any], severity: str,
                        channels: Sequence[str], *, cooldown_s: int = 300, name: str | None = None) -> int:
    """The built-in rule ``key`` (created once, kept as the code says); it matches every user's events on ``model``."""
    from auth_api.alerts.models import Condition

    cond = Condition.model_validate(condition).model_dump(exclude_none=True)  # the same validation as the API
    if severity not in ("info", "warning", "critical") or not set(channels) <= {"in_app", "email"} or not channels:
        raise ValueError("built-in rules: severity info|warning|critical, channels from in_app, email")
    values = {"name": (name or key)[:100], "model": model, "condition": cond, "severity": severity,
              "channels": list(dict.fromkeys(channels)), "cooldown_s": int(cooldown_s)}
    row = conn.execute(sa.select(RULES).where(RULES.c.key == key)).first()
    if row is not None:
        if any(getattr(row, k) != v for k, v in values.items()):
            conn.execute(sa.update(RULES).where(RULES.c.id == row.id).values(**values, updated_at=utcnow()))
        return int(row.id)
    now = utcnow()
    ins = _insert(conn, RULES).values(key=key, owner_id=None, scope="builtin", enabled=True, asset=None, webhook_url=None,
                                      webhook_secret=None, created_at=now, updated_at=now, **values)
    conn.execute(ins.on_conflict_do_nothing(index_elements=["key"]))  # another process may create it at the same time
    return int(conn.execute(sa.select(RULES.c.id).where(RULES.c.key == key)).scalar_one())


class AlertHook:
    """``Ingester(hooks=[AlertHook()])``: each batch of new history rows → events → rules (cached) → alerts."""

    def __init__(self) -> None:
        self.cache = RuleCache()

    def __call__(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        events = [{"model": r.get("model"), "version": r.get("version"), "label": r.get("output_label"),
                   "probability": r.get("output_confidence"), "score": r.get("output_value"), "value": r.get("output_value"),
                   "user_id": r.get("user_id"), "asset": None, "source": r.get("protocol"),
                   "prediction_id": r.get("prediction_id")}
                  for r in rows if r.get("status") == 200]
        if not events:
            return
        try:
            # In a savepoint: a failure here (a bad rule, a lock timeout) costs this batch its alerts, never its history
            # rows, which would otherwise be retried forever behind it.
            with conn.begin_nested():
                rules = self.cache.rules(conn, [str(e["model"]) for e in events])
                n = len(fire(conn, rules, events)) if rules else 0
        except Exception:
            logger.exception("alert rules failed on a batch of %d predictions; the rows are kept without alerts", len(events))
            return
        if n:
            logger.info("%d alert(s) from %d prediction(s)", n, len(events))


__all__ = ["AlertHook", "ensure_builtin_rule", "evaluate_events"]
