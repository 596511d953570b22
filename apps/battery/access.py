"""Who may see a battery (its owner, or an admin; anyone else gets the same 404 as for a missing one) and time parsing."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from apps.battery.models import Battery
from auth_api.authn import Principal
from auth_api.core.errors import InvalidInput, NotFound


def battery_for(db: Session, p: Principal, battery_id: int) -> Battery:
    b = db.get(Battery, battery_id)
    if b is None or not (p.at_least("admin") or b.owner_id == p.user_id):
        raise NotFound(f"battery {battery_id} not found", code="battery_not_found", details={"battery_id": battery_id})
    return b


def visible(p: Principal, owner_id: int) -> bool:
    return p.at_least("admin") or owner_id == p.user_id


def epoch(value: Any, field: str) -> float | None:
    """ISO-8601 text (naive = UTC) or epoch seconds -> epoch seconds; None stays None; anything else -> 422 naming ``field``."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except ValueError:
            pass
    raise InvalidInput(f"{field}: not a time (ISO-8601, e.g. 2026-12-01T08:00:00Z, or epoch seconds)", code="invalid_time",
                       details={"field": field})


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def check_range(lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and hi < lo:
        raise InvalidInput("'to' is before 'from'", code="invalid_range", details={"field": "to"})
