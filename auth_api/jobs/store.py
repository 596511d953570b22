"""Job rows: every state change is one conditional UPDATE, so a cancel, a worker and a watchdog never overwrite each
other's final word (a finished job stays finished)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from auth_api.jobs.tables import ACTIVE, TrainingJob
from auth_api.models import utcnow

LOG_MAX_CHARS = 20_000


def set_fields(engine: Engine, job_id: str, *, only_if: tuple[str, ...] = ACTIVE, **fields: Any) -> bool:
    """Update ``fields`` while the job is in one of ``only_if``; False if it had moved on."""
    with Session(engine) as db:
        res = db.exec(update(TrainingJob).where(col(TrainingJob.id) == job_id, col(TrainingJob.state).in_(only_if))  # type: ignore[call-overload]
                      .values(**fields))
        db.commit()
        return bool(res.rowcount)


def append_log(engine: Engine, job_id: str, lines: list[str], **fields: Any) -> bool:
    """Add log lines (the newest LOG_MAX_CHARS kept) and update ``fields`` of an active job."""
    with Session(engine) as db:
        job = db.get(TrainingJob, job_id)
        if job is None or job.state not in ACTIVE:
            return False
        text = (job.log + "".join(f"{ln}\n" for ln in lines))[-LOG_MAX_CHARS:]
        return set_fields(engine, job_id, log=text, **fields)


def finish(engine: Engine, job_id: str, state: str, *, code: str | None = None, error: str | None = None,
           line: str | None = None, **fields: Any) -> bool:
    now = utcnow()
    lines = [line] if line else []
    if error and not line:
        lines.append(f"{state}: {error}")
    with Session(engine) as db:
        job = db.get(TrainingJob, job_id)
        log = job.log if job else ""
    text = (log + "".join(f"{ln}\n" for ln in lines))[-LOG_MAX_CHARS:]
    return set_fields(engine, job_id, state=state, finished_at=now, error_code=code, error=error, log=text,
                      stage=state if state != "succeeded" else "done", **fields)


def active_count(db: Session, owner_id: int) -> int:
    q = select(func.count()).select_from(TrainingJob).where(TrainingJob.owner_id == owner_id,
                                                             col(TrainingJob.state).in_(ACTIVE))
    return int(db.exec(q).one())


def stale(engine: Engine, older_than: datetime) -> list[TrainingJob]:
    """Running jobs whose worker has not written since ``older_than``."""
    with Session(engine) as db:
        q = select(TrainingJob).where(TrainingJob.state == "running", col(TrainingJob.heartbeat_at) < older_than)
        return list(db.exec(q).all())


def active(engine: Engine) -> list[TrainingJob]:
    with Session(engine) as db:
        return list(db.exec(select(TrainingJob).where(col(TrainingJob.state).in_(ACTIVE))).all())


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
