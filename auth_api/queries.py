"""Read-side queries for history and dashboards (scoped to the caller unless admin)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from auth_api.authn import Principal
from auth_api.models import Feedback, Prediction, utcnow


def scoped(stmt: Any, p: Principal) -> Any:
    return stmt if p.role == "admin" else stmt.where(Prediction.user_id == p.user_id)


def history(db: Session, p: Principal, *, model: str | None, version: str | None, status: int | None,
            since: datetime | None, until: datetime | None, limit: int, offset: int) -> tuple[list[Prediction], int]:
    stmt = scoped(select(Prediction), p)
    if model:
        stmt = stmt.where(Prediction.model == model)
    if version:
        stmt = stmt.where(Prediction.version == version)
    if status is not None:
        stmt = stmt.where(Prediction.status == status)
    if since:
        stmt = stmt.where(col(Prediction.created_at) >= since)
    if until:
        stmt = stmt.where(col(Prediction.created_at) < until)
    total = db.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = db.exec(stmt.order_by(col(Prediction.id).desc()).offset(offset).limit(limit))
    return list(rows), int(total)


def get_prediction(db: Session, p: Principal, prediction_id: int) -> Prediction | None:
    return db.exec(scoped(select(Prediction), p).where(Prediction.id == prediction_id)).first()


def stats(db: Session, p: Principal, model: str | None = None) -> dict[str, Any]:
    mine = scoped(select(Prediction), p)
    if model is not None:
        mine = mine.where(Prediction.model == model)
    base = mine.where(Prediction.status == 200).subquery()
    total = db.exec(select(func.count()).select_from(base)).one()
    by_model = db.exec(select(base.c.model, func.count()).group_by(base.c.model).order_by(base.c.model)).all()
    by_version = db.exec(select(base.c.model, base.c.version, func.count()).group_by(base.c.model, base.c.version)
                         .order_by(base.c.model, base.c.version)).all()
    by_label = db.exec(select(base.c.model, base.c.output_label, func.count()).where(base.c.output_label.is_not(None))
                       .group_by(base.c.model, base.c.output_label).order_by(base.c.model, base.c.output_label)).all()
    mean_conf = db.exec(select(func.avg(base.c.output_confidence))).one()
    failed = mine.where(Prediction.status != 200).subquery()
    errors = db.exec(select(func.count()).select_from(failed)).one()
    err_model = dict(db.exec(select(failed.c.model, func.count()).group_by(failed.c.model)).all())
    by_error = db.exec(select(failed.c.model, failed.c.status, failed.c.error_code, func.count())
                       .group_by(failed.c.model, failed.c.status, failed.c.error_code)
                       .order_by(failed.c.model, failed.c.status, failed.c.error_code)).all()
    fb = select(Feedback.correct).join(Prediction, col(Prediction.id) == col(Feedback.prediction_id))
    if p.role != "admin":
        fb = fb.where(Prediction.user_id == p.user_id)
    if model is not None:
        fb = fb.where(Prediction.model == model)
    verdicts = list(db.exec(fb))
    n_fb, n_ok = len(verdicts), sum(1 for v in verdicts if v)
    ok = dict(by_model)
    return {
        "total": int(total),
        "errors": int(errors),
        "by_model": [{"model": m, "count": ok.get(m, 0), "errors": err_model.get(m, 0)} for m in sorted({*ok, *err_model})],
        "by_error": [{"model": m, "status": st, "code": code, "count": c} for m, st, code, c in by_error],
        "by_version": [{"model": m, "version": v, "count": c} for m, v, c in by_version],
        "by_label": [{"model": m, "label": lab, "count": c} for m, lab, c in by_label],
        "mean_confidence": float(mean_conf) if mean_conf is not None else None,
        "feedback": {"count": n_fb, "correct": n_ok, "accuracy": (n_ok / n_fb) if n_fb else None},
    }


def recent(db: Session, p: Principal, limit: int) -> list[Prediction]:
    return list(db.exec(scoped(select(Prediction), p).order_by(col(Prediction.id).desc()).limit(limit)))


def timeline(db: Session, p: Principal, days: int, bucket: str) -> list[dict[str, Any]]:
    """Counts per hour or day over the last ``days`` days (bucketed here so SQLite and PostgreSQL agree)."""
    since = utcnow() - timedelta(days=days)
    rows = db.exec(scoped(select(Prediction.created_at, Prediction.status), p).where(col(Prediction.created_at) >= since))
    counts: Counter[datetime] = Counter()
    errors: Counter[datetime] = Counter()
    for created, status in rows:
        start = created.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            start = start.replace(hour=0)
        counts[start] += 1
        if status != 200:
            errors[start] += 1
    return [{"bucket_start": b, "count": counts[b], "successes": counts[b] - errors[b], "errors": errors[b]} for b in sorted(counts)]


def by_label(db: Session, p: Principal, label: str, limit: int) -> dict[str, Any]:
    stmt = scoped(select(Prediction), p).where(Prediction.output_label == label, Prediction.status == 200)
    sub = stmt.subquery()
    count, mean_conf = db.exec(select(func.count(), func.avg(sub.c.output_confidence))).one()
    items = list(db.exec(stmt.order_by(col(Prediction.id).desc()).limit(limit)))
    return {"label": label, "count": int(count), "mean_confidence": float(mean_conf) if mean_conf is not None else None,
            "items": items}
