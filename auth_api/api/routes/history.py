"""The caller's prediction history (admins see everyone's) and feedback on a prediction, found by its prediction id.

Rows come from the journal through the ingester, a few milliseconds behind the response; a lookup of a prediction id
minted moments ago waits for its row (bounded), so a client can name the prediction it just got. The wait depends only
on the id's age, never on whether another user's row exists (that is a plain 404 after the same wait).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from auth_api import crud, queries, stored_inputs
from auth_api.api.params import MAX_ID, Offset
from auth_api.authn import Principal
from auth_api.core.errors import NotFound
from auth_api.deps import GatewayDep, UserPrincipal
from auth_api.ingester import committed
from auth_api.journal import canonical_id, id_age_s, segments
from auth_api.models import Feedback, FeedbackCreate, FeedbackPublic, HistoryPage, Prediction, PredictionPublic
from auth_api.state import Gateway
from auth_api.storage_models import PredictionDetail

router = APIRouter(prefix="/history", tags=["history"])
RECENT_S = 10.0  # ids younger than this may still be on their way from the journal
POLL_S = 0.02
PredictionKey = Annotated[str, Path(pattern=r"^([0-9]{1,10}|[0-9a-fA-F-]{32,36})$",
                                    description="The prediction id (a UUID) a response carried, or a row's integer id.")]


def _journal_ends(directory: FsPath) -> list[tuple[str, int]]:
    """(segment, size) of every writer's newest journal segment: what has been acknowledged so far."""
    ends = []
    for segs in segments(directory).values():
        try:
            ends.append((segs[-1].name, segs[-1].path.stat().st_size))
        except FileNotFoundError:  # ingested whole and deleted meanwhile
            continue
    return ends


async def caught_up(gw: Gateway, timeout_s: float) -> bool:
    """Wait (bounded) until the ingester has made rows of every prediction acknowledged before this call, by any worker."""
    directory = gw.journal.directory
    ends = await run_in_threadpool(_journal_ends, directory)
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [e for e in ends if not await run_in_threadpool(committed, gw.engine, directory, *e)]
        if not pending or time.monotonic() >= deadline:
            return not pending
        if gw.ingester is not None:
            gw.ingester.ingester.wake()
        ends = pending
        await asyncio.sleep(POLL_S)


@router.get("", response_model=HistoryPage)
async def list_history(p: UserPrincipal, gw: GatewayDep, model: str | None = None, version: str | None = None,
                       status: Annotated[int | None, Query(ge=100, le=599)] = None, since: datetime | None = None,
                       until: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                       offset: Offset = 0) -> HistoryPage:
    """Predictions, newest first; filter by model, version, status and time. Includes every prediction answered before
    the call (the list waits, at most ``gateway_history_read_wait_s``, for the journal's ingester to catch up)."""
    await caught_up(gw, gw.settings.gateway_history_read_wait_s)

    def page(db: Session) -> tuple[list[Prediction], int]:
        return queries.history(db, p, model=model, version=version, status=status, since=since, until=until,
                               limit=limit, offset=offset)

    with Session(gw.engine) as db:
        rows, total = await run_in_threadpool(page, db)
    return HistoryPage(items=[PredictionPublic.model_validate(r, from_attributes=True) for r in rows], total=total,
                       limit=limit, offset=offset)


def _lookup(db: Session, p: Principal, key: int | str) -> Prediction | None:
    col = Prediction.id if isinstance(key, int) else Prediction.prediction_id
    return db.exec(queries.scoped(select(Prediction), p).where(col == key)).first()


async def find(gw: Gateway, p: Principal, prediction_id: str) -> Prediction:
    """The caller's prediction by id (an admin's: anyone's); waits for a just-minted one; NotFound otherwise."""
    key: int | str
    age: float | None = None
    if prediction_id.isdigit():
        key = int(prediction_id)
        if not 1 <= key <= MAX_ID:  # the same answer as any out-of-range integer id (ids are 32-bit columns)
            raise RequestValidationError([{"loc": ("path", "prediction_id"), "msg": f"an integer id is 1 .. {MAX_ID}",
                                           "type": "less_than_equal"}])
    else:
        try:
            key = canonical_id(prediction_id)
        except ValueError:
            raise _not_found(prediction_id) from None
        age = id_age_s(key, time.time() * 1000.0)
    row = await gw.run_db(_lookup, p, key)
    if row is None and age is not None and -1.0 <= age <= RECENT_S:
        if gw.ingester is not None:
            gw.ingester.ingester.wake()
        deadline = time.monotonic() + gw.settings.gateway_history_read_wait_s
        while row is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            row = await gw.run_db(_lookup, p, key)
    if row is None:
        raise _not_found(prediction_id)
    return row


def _not_found(prediction_id: str) -> NotFound:
    return NotFound(f"prediction {prediction_id[:40]} not found", code="prediction_not_found")


@router.get("/{prediction_id}", response_model=PredictionDetail)
async def get_history(prediction_id: PredictionKey, p: UserPrincipal, gw: GatewayDep, request: Request) -> PredictionDetail:
    """One prediction, by the id its response carried (``X-Prediction-Id``, ``prediction_id``) or its row id; a kept
    input comes with a signed, expiring ``input_url``."""
    return await stored_inputs.detail(gw, await find(gw, p, prediction_id), str(request.base_url))


@router.post("/{prediction_id}/feedback", response_model=FeedbackPublic)
async def give_feedback(prediction_id: PredictionKey, body: FeedbackCreate, p: UserPrincipal, gw: GatewayDep) -> Feedback:
    """Say whether a prediction was right (a second call replaces the first)."""
    row = await find(gw, p, prediction_id)
    assert row.id is not None
    return await gw.run_db(crud.upsert_feedback, row.id, p.user_id, body)
