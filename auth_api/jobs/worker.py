"""The body of a job inside a Ray worker: it writes its own progress, heartbeat and final state to the database,
so a job's record is right even when the gateway that submitted it is gone."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from auth_api.core.db import make_engine
from auth_api.jobs import store
from auth_api.models import utcnow
from mlstack.errors import MlstackError
from training.jobs.data import DataRef
from training.jobs.run import run_job
from training.jobs.spec import JobCancelled, JobSpec

logger = logging.getLogger(__name__)
HEARTBEAT_S = 2.0
WRITE_EVERY_S = 0.3


def execute(job_id: str, spec: dict[str, Any], ref: DataRef, db_url: str, repo: str, served: str, owner: str,
            publish_kwargs: dict[str, Any], trials_on_ray: bool) -> dict[str, Any]:
    """Run one job; returns {"state", "model", "version", "metrics"} (the row already says the same)."""
    engine = make_engine(db_url)
    try:
        return _execute(engine, job_id, spec, ref, repo, served, owner, publish_kwargs, trials_on_ray)
    finally:
        engine.dispose()


def _execute(engine: Engine, job_id: str, spec: dict[str, Any], ref: DataRef, repo: str, served: str, owner: str,
             publish_kwargs: dict[str, Any], trials_on_ray: bool) -> dict[str, Any]:
    started = utcnow()
    if not store.set_fields(engine, job_id, only_if=("queued",), state="running", stage="load", started_at=started,
                            heartbeat_at=started):
        return {"state": "skipped"}  # cancelled while queued
    store.append_log(engine, job_id, [f"worker pid {os.getpid()} on {socket.gethostname()}"])
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            store.set_fields(engine, job_id, only_if=("running",), heartbeat_at=utcnow())

    threading.Thread(target=beat, name=f"job-{job_id}-heartbeat", daemon=True).start()
    pending: list[str] = []
    last: dict[str, Any] = {"at": 0.0, "stage": ""}

    def progress(stage: str, fraction: float, line: str) -> None:
        pending.append(line)
        now = time.monotonic()
        if stage != last["stage"] or now - last["at"] >= WRITE_EVERY_S or fraction >= 1.0 or stage == "publish":
            ok = store.append_log(engine, job_id, pending[:], stage=stage, progress=round(min(fraction, 0.99), 3),
                                  heartbeat_at=utcnow())
            pending.clear()
            last.update(at=now, stage=stage)
            if not ok:  # cancelled (or failed by the watchdog): stop before anything is published
                raise JobCancelled("the job was cancelled")

    try:
        out = run_job(JobSpec.model_validate(spec), ref, repo=Path(repo), served=served, job_id=job_id, owner=owner,
                      progress=progress, use_ray=trials_on_ray, publish_kwargs=publish_kwargs)
    except JobCancelled:
        return {"state": "cancelled"}
    except MlstackError as exc:
        store.finish(engine, job_id, "failed", code=str(exc.code), error=exc.message)
        return {"state": "failed", "code": exc.code, "error": exc.message}
    except Exception as exc:  # a bug or a library failure: the job says so instead of hanging in "running"
        logger.exception("job %s crashed", job_id)
        store.finish(engine, job_id, "failed", code="job_crashed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        return {"state": "failed", "code": "job_crashed"}
    finally:
        stop.set()
    store.finish(engine, job_id, "succeeded", line=f"published {out.model} version {out.version}", progress=1.0,
                 version=out.version, metrics={**out.metrics, **({"best_params": out.best_params} if out.best_params else {})})
    return {"state": "succeeded", "model": out.model, "version": out.version, "metrics": out.metrics}
