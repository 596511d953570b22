"""The battery app's side of the stack's alert rules (``auth_api.alerts.engine``, docs/alerts.md): built-in rules seeded
on use, and analysis / thermal results turned into events evaluated in the caller's transaction."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

logger = logging.getLogger(__name__)

FAULT_P = 0.8  # a window's fault class counts when the classifier is at least this sure
THERMAL_DELTA_C = 5.0
HEALTHY_CLASS = "normal"  # battery-fault's label for a healthy window
# key, model, condition, severity (the built-in battery rules; they apply to every user's batteries)
BUILTIN_RULES: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("battery.fault", "battery-fault", {"label_not_in": [HEALTHY_CLASS], "probability_gt": FAULT_P}, "critical"),
    ("battery.anomaly", "battery-anomaly", {"score_lt": 0.0}, "warning"),
    ("battery.thermal", "thermal", {"value_gt": THERMAL_DELTA_C}, "critical"),
)


def _engine() -> Any:
    try:
        from auth_api.alerts import engine
    except ImportError:  # the alert rules feature is not installed: results are stored, no alert is raised
        return None
    return engine


def asset(battery_id: int) -> str:
    return f"battery:{battery_id}"


def event(model: str, version: str | None, user_id: int, battery_id: int, source: str, *, label: str | None = None,
          probability: float | None = None, score: float | None = None, value: float | None = None) -> dict[str, Any]:
    return {"model": model, "version": version, "label": label, "probability": probability, "score": score, "value": value,
            "user_id": user_id, "asset": asset(battery_id), "source": source, "prediction_id": None}


def evaluate(conn: Connection, events: list[dict[str, Any]]) -> list[Any]:
    """Seed the built-in rules and evaluate ``events``; the ids of the alerts raised."""
    engine = _engine()
    if engine is None or not events:
        return []
    try:
        # in a savepoint: a failing rule costs the result its alerts, never the stored result itself
        with conn.begin_nested():
            # idempotent, a few queries: done with every evaluation so a rolled-back seed can never be taken for done
            for rule_key, model, condition, severity in BUILTIN_RULES:
                engine.ensure_builtin_rule(conn, rule_key, model, condition, severity, ["in_app"], name=f"built-in: {rule_key}")
            return list(engine.evaluate_events(conn, events))
    except Exception:
        logger.exception("alert rules could not be evaluated for %s", events[0].get("source"))
        return []
