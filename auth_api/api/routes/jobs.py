"""Training jobs: submit (202), list, get, cancel, and live progress as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from auth_api import stored_inputs
from auth_api.authn import Principal
from auth_api.core.errors import Conflict, Forbidden, NotFound
from auth_api.deps import CurrentPrincipal, GatewayDep
from auth_api.jobs import store
from auth_api.jobs.ownership import served_name
from auth_api.jobs.service import resolve_dataset, runner_of
from auth_api.jobs.tables import ACTIVE, JobPublic, TrainingJob
from auth_api.journal import new_prediction_id
from mlstack.errors import MlstackError
from mlstack.repository.layout import model_names
from training.jobs.spec import JobSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])


class QuotaExceeded(MlstackError):
    """A per-user quota (concurrent jobs, models) is used up."""

    code = "quota_exceeded"
    status = 429
JobId = Annotated[str, Path(max_length=36)]
EVENT_POLL_S = 0.5


def trainer(p: CurrentPrincipal) -> Principal:
    """Users and above train; testers too (on samples only); API keys need the 'models' scope."""
    if p.role != "tester" and not p.at_least("user"):
        raise Forbidden("requires role 'user' or 'tester'", code="insufficient_role")
    if p.kind == "api_key" and "models" not in p.scopes:
        raise Forbidden("this API key lacks the 'models' scope", code="missing_scope")
    return p


Trainer = Annotated[Principal, Depends(trainer)]


def _get(db: Session, p: Principal, job_id: str) -> TrainingJob:
    job = db.get(TrainingJob, job_id)
    if job is None or (job.owner_id != p.user_id and p.role != "admin"):
        raise NotFound(f"job '{job_id}' not found", code="job_not_found")
    return job


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def submit(body: JobSpec, p: Trainer, gw: GatewayDep) -> JobPublic:
    """Queue a training job; follow it with GET /jobs/{id} or /jobs/{id}/events."""
    body.check()
    s = gw.settings
    assert p.user_id is not None
    served = served_name(p.user_id, body.name)

    storage = stored_inputs.open_store(gw).storage  # the gateway's object storage, where uploads are kept

    def create(db: Session) -> TrainingJob:
        ref = resolve_dataset(db, p, body.dataset_id, storage)
        if store.active_count(db, p.user_id or 0) >= s.jobs_max_concurrent_per_user:
            raise QuotaExceeded(f"you already have {s.jobs_max_concurrent_per_user} jobs queued or running",
                              code="job_quota", details={"limit": s.jobs_max_concurrent_per_user})
        prefix = served_name(p.user_id or 0, "")
        owned = [n for n in model_names(s.repository) if n.startswith(prefix)]
        if served not in owned and len(owned) >= s.jobs_max_models_per_user:
            raise QuotaExceeded(f"you own {len(owned)} models (the limit); delete one first", code="model_quota",
                              details={"limit": s.jobs_max_models_per_user})
        job = TrainingJob(id=new_prediction_id(), owner_id=p.user_id or 0, spec=body.model_dump(mode="json"),
                          dataset_id=ref.id, dataset_sha256=ref.sha256, model=served, runner=runner_of(gw).ident,
                          log=f"queued by {p.username}: {body.algorithm} on {ref.id} -> {served}\n")
        db.add(job)
        db.commit()
        db.refresh(job)
        runner_of(gw).submit(job.id, job.spec, ref, served, p.username)
        return job

    return JobPublic.of(await gw.run_db(create))


@router.get("")
async def list_jobs(p: Trainer, gw: GatewayDep, all_users: bool = False, limit: int = 50) -> list[JobPublic]:
    """Your jobs, newest first (admins: ``?all_users=true`` for everyone's)."""
    def rows(db: Session) -> list[TrainingJob]:
        q = select(TrainingJob).order_by(col(TrainingJob.created_at).desc()).limit(max(1, min(limit, 500)))
        if not (all_users and p.role == "admin"):
            q = q.where(TrainingJob.owner_id == p.user_id)
        return list(db.exec(q).all())

    return [JobPublic.of(j, lines=5) for j in await gw.run_db(rows)]


@router.get("/{job_id}")
async def get_job(job_id: JobId, p: Trainer, gw: GatewayDep, log_lines: int = 20) -> JobPublic:
    """State, stage, progress, metrics, the log tail and the published model/version."""
    return JobPublic.of(await gw.run_db(_get, p, job_id), lines=max(1, min(log_lines, 1000)))


@router.post("/{job_id}/cancel")
async def cancel(job_id: JobId, p: Trainer, gw: GatewayDep) -> JobPublic:
    """Stop a queued or running job (its Ray task is killed; nothing is published)."""
    job = await gw.run_db(_get, p, job_id)
    if job.state not in ACTIVE or not await asyncio.to_thread(runner_of(gw).cancel, job_id):
        job = await gw.run_db(_get, p, job_id)
        raise Conflict(f"job '{job_id}' already {job.state}", code="job_finished", details={"state": job.state})
    return JobPublic.of(await gw.run_db(_get, p, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "`progress` events, then `end`."}})
async def events(job_id: JobId, p: Trainer, gw: GatewayDep, request: Request) -> StreamingResponse:
    """Live progress as Server-Sent Events: one ``progress`` event per change, ``end`` with the final state."""
    await gw.run_db(_get, p, job_id)

    async def stream() -> AsyncIterator[str]:
        seen: tuple[object, ...] | None = None
        while not await request.is_disconnected():
            job = await gw.run_db(_get, p, job_id)
            pub = JobPublic.of(job, lines=5)
            key = (job.state, job.stage, job.progress, len(job.log))
            if key != seen:
                seen = key
                yield f"event: progress\ndata: {json.dumps(pub.model_dump(mode='json'))}\n\n"
            if job.state not in ACTIVE:
                yield f"event: end\ndata: {json.dumps({'state': job.state, 'model': job.model, 'version': job.version})}\n\n"
                return
            await asyncio.sleep(EVENT_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
