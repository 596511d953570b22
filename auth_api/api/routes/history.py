"""The caller's prediction history (admins see everyone's) and feedback on a prediction."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from auth_api import crud, queries
from auth_api.api.params import Id, Offset
from auth_api.core.errors import NotFound
from auth_api.deps import SessionDep, UserPrincipal
from auth_api.models import Feedback, FeedbackCreate, FeedbackPublic, HistoryPage, Prediction, PredictionPublic

router = APIRouter(prefix="/history", tags=["history"])


@router.get("", response_model=HistoryPage)
def list_history(p: UserPrincipal, db: SessionDep, model: str | None = None, version: str | None = None,
                 status: Annotated[int | None, Query(ge=100, le=599)] = None, since: datetime | None = None,
                 until: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                 offset: Offset = 0) -> HistoryPage:
    """Predictions, newest first; filter by model, version, status and time."""
    rows, total = queries.history(db, p, model=model, version=version, status=status, since=since, until=until,
                                  limit=limit, offset=offset)
    return HistoryPage(items=[PredictionPublic.model_validate(r, from_attributes=True) for r in rows], total=total,
                       limit=limit, offset=offset)


@router.get("/{prediction_id}", response_model=PredictionPublic)
def get_history(prediction_id: Id, p: UserPrincipal, db: SessionDep) -> Prediction:
    """One prediction."""
    row = queries.get_prediction(db, p, prediction_id)
    if row is None:
        raise NotFound(f"prediction {prediction_id} not found", code="prediction_not_found")
    return row


@router.post("/{prediction_id}/feedback", response_model=FeedbackPublic)
def give_feedback(prediction_id: Id, body: FeedbackCreate, p: UserPrincipal, db: SessionDep) -> Feedback:
    """Say whether a prediction was right (a second call replaces the first)."""
    row = get_history(prediction_id, p, db)
    assert row.id is not None
    return crud.upsert_feedback(db, row.id, p.user_id, body)
