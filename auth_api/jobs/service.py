"""Open / close the jobs service with the gateway (called from the lifespan), and resolve a job's dataset."""

from __future__ import annotations

import logging

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth_api import registry
from auth_api.authn import Principal
from auth_api.core import db as dbmod
from auth_api.core.errors import Forbidden, NotFound
from auth_api.jobs.ownership import Shares
from auth_api.jobs.runner import JobRunner
from auth_api.state import Gateway
from mlstack.storage import Storage
from training.jobs.data import DataRef, canonical_id

logger = logging.getLogger(__name__)


async def open_jobs(gw: Gateway) -> None:
    """Shares cache (hot path) and the job runner (Ray is not touched until the first job)."""
    shares = Shares(gw.engine)
    await run_in_threadpool(shares.load)
    shares.start()
    gw.extras["shares"] = shares

    def published(name: str) -> None:
        gw.catalog.invalidate(name)
        try:
            registry.sync(gw.engine, gw.settings.repository, name)
        except Exception:
            logger.exception("could not mirror %s into model_versions", name)

    runner = JobRunner(gw.settings, gw.engine, dbmod.database_url(gw.settings), published)
    n = await run_in_threadpool(runner.reconcile)
    if n:
        logger.warning("failed %d orphaned training jobs", n)
    runner.start()
    gw.extras["jobs"] = runner


async def close_jobs(gw: Gateway) -> None:
    runner = gw.extras.pop("jobs", None)
    if isinstance(runner, JobRunner):
        await runner.stop()
    shares = gw.extras.pop("shares", None)
    if isinstance(shares, Shares):
        await shares.stop()


def runner_of(gw: Gateway) -> JobRunner:
    r = gw.extras.get("jobs")
    assert isinstance(r, JobRunner), "the jobs service is not open"
    return r


def resolve_dataset(db: Session, p: Principal, dataset_id: str, storage: Storage | None = None) -> DataRef:
    """A sample (``sample-<name>``, everyone) or an uploaded dataset (its owner or an admin; never a tester), through
    the datasets service's ``lookup`` (ownership, sha256; the file's path when storage is the file backend)."""
    from auth_api.datasets import lookup

    dataset_id = canonical_id(dataset_id)
    if p.role == "tester" and not dataset_id.startswith("sample-"):
        raise Forbidden("the tester role trains on sample datasets only", code="sample_data_only",
                        details={"dataset_id": dataset_id})
    got = lookup(db, p, dataset_id, storage)
    if got is None:
        raise NotFound(f"dataset '{dataset_id}' not found", code="dataset_not_found", details={"dataset_id": dataset_id})
    return DataRef(id=got.id, kind=got.kind, name=got.name, format=got.format, path=got.path, object_key=got.object_key,
                   sha256=got.sha256, sheet=got.sheet)
