"""Per-model statistics from the history table (every gateway's predictions, durable) plus this process's cache counters.

Requests and errors count history rows (failed predictions are recorded with their status); latency percentiles are
those of successful predictions (gateway + upstream time, exact: read by offset, portable across SQLite and
PostgreSQL); cache hits are successful v2 rows answered without an upstream call (``upstream_ms == 0``).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func
from sqlmodel import Session, col, select

from auth_api.models import Prediction, utcnow

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def model_stats(db: Session, name: str, hours: float) -> dict[str, Any]:
    """Requests, errors, latency percentiles (ms) and cache hits of ``name`` over the last ``hours``."""
    since: datetime = utcnow() - timedelta(hours=hours)
    where = (col(Prediction.model) == name, col(Prediction.created_at) >= since)
    ok = col(Prediction.status) == 200
    total, errors, hits = db.exec(select(
        func.count(),
        func.coalesce(func.sum(case((col(Prediction.status) >= 400, 1), else_=0)), 0),
        func.coalesce(func.sum(case((and_(ok, col(Prediction.protocol) == "http", col(Prediction.upstream_ms) == 0), 1), else_=0)), 0),
    ).where(*where)).one()
    latency_ms = col(Prediction.gateway_ms) + col(Prediction.upstream_ms)
    n_ok = int(db.exec(select(func.count()).where(*where, ok)).one())
    pct: dict[str, float | None] = {}
    for label, q in QUANTILES.items():
        if not n_ok:
            pct[label] = None
            continue
        k = min(n_ok - 1, max(0, math.ceil(q * n_ok) - 1))
        pct[label] = float(db.exec(select(latency_ms).where(*where, ok).order_by(latency_ms).offset(k).limit(1)).one())
    return {"model": name, "window_hours": hours, "since": since.isoformat(), "requests": int(total), "errors": int(errors),
            "successes": n_ok, "latency_ms": pct, "cache_hits": int(hits),
            "cache_hit_ratio": round(int(hits) / n_ok, 4) if n_ok else None}
