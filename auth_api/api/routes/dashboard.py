"""Dashboards over the caller's history (admins: everyone's): totals, accuracy from feedback, timeline, labels."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from auth_api import queries, stored_inputs
from auth_api.api.strict_query import no_unknown_query
from auth_api.deps import SessionDep, UserPrincipal
from auth_api.models import Prediction, PredictionPublic

router = APIRouter(prefix="/dashboard", tags=["dashboard"], dependencies=[Depends(no_unknown_query)])


@router.get("/stats")
def stats(p: UserPrincipal, db: SessionDep,
          model: Annotated[str | None, Query(max_length=64, description="Only this model's predictions.")] = None) -> dict[str, Any]:
    """Successful predictions (``total``) by model, version and label, failed ones (``errors``) by model, status and code;
    mean confidence; accuracy = share of feedback marked correct. ``?model=`` narrows all of it to one model.
    ``storage``: bytes and objects of kept inputs (the caller's; an admin's: everyone's, with ``by_user``)."""
    out = queries.stats(db, p, model)
    out["storage"] = stored_inputs.usage_report(db, None if p.role == "admin" else p.user_id)
    return out


@router.get("/recent", response_model=list[PredictionPublic])
def recent(p: UserPrincipal, db: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> list[Prediction]:
    """The latest predictions, failed ones included (``status``, ``error_code``)."""
    return queries.recent(db, p, limit)


@router.get("/timeline")
def timeline(p: UserPrincipal, db: SessionDep, days: Annotated[int, Query(ge=1, le=366)] = 7,
             bucket: Literal["hour", "day"] = "day") -> list[dict[str, Any]]:
    """Requests per hour or day: ``count`` = ``successes`` + ``errors`` (failed predictions)."""
    return queries.timeline(db, p, days, bucket)


@router.get("/labels/{label}")
def label(p: UserPrincipal, db: SessionDep, label: Annotated[str, Path(max_length=128)],
          limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
    """Successful predictions with one label (failures have none): count, mean confidence, latest rows."""
    out = queries.by_label(db, p, label, limit)
    out["items"] = [PredictionPublic.model_validate(r, from_attributes=True) for r in out["items"]]
    return out
