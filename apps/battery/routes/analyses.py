"""Analyses: ``POST /api/v1/batteries/{id}/analyses`` starts one (202 + id), ``GET /api/v1/analyses/{id}`` reads it,
``GET /api/v1/analyses/{id}/explanation`` explains its flagged windows (SHAP and LIME)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from apps.battery import analysis, explain, jobs, store
from apps.battery.access import battery_for, check_range, epoch, iso, visible
from apps.battery.models import Analysis
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import Conflict, InvalidInput, NotFound
from auth_api.deps import GatewayDep, UserPrincipal

MAX_SAMPLES = 2_000_000  # ~3 weeks at 1 Hz; the analysis holds them in memory once
router = APIRouter(tags=["battery analyses"], dependencies=[Depends(no_unknown_query)])


class AnalysisRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"examples": [{"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"}]})
    from_: str | float | None = Field(None, alias="from", description="ISO-8601 or epoch seconds; default: the first sample")
    to: str | float | None = Field(None, description="ISO-8601 or epoch seconds; default: the last sample")


def public(a: Analysis, *, windows: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": a.id, "battery_id": a.battery_id, "status": a.status, "from": iso(a.from_ts), "to": iso(a.to_ts),
                           "verdict": a.verdict, "summary": a.summary, "error": a.error, "created_at": a.created_at,
                           "finished_at": a.finished_at}
    if windows:
        out["windows"] = a.windows
    return out


def _create(db: Session, p: Principal, battery_id: int, lo: float | None, hi: float | None) -> Analysis:
    b = battery_for(db, p, battery_id)
    n, _, _ = store.span(db.connection(), battery_id, lo, hi)
    if n == 0:
        raise InvalidInput("no telemetry in the range: upload some first", code="no_telemetry",
                           details={"battery_id": battery_id, "from": iso(lo), "to": iso(hi)})
    if n > MAX_SAMPLES:
        raise InvalidInput(f"{n} samples in the range; one analysis reads at most {MAX_SAMPLES}: narrow from/to",
                           code="range_too_large", details={"limit": MAX_SAMPLES, "samples": n})
    a = Analysis(battery_id=battery_id, owner_id=b.owner_id, from_ts=lo, to_ts=hi)
    db.add(a)
    db.commit()
    db.refresh(a)
    return a


@router.post("/batteries/{battery_id}/analyses", status_code=status.HTTP_202_ACCEPTED)
async def start_analysis(battery_id: Id, p: UserPrincipal, gw: GatewayDep, body: AnalysisRequest | None = None) -> dict[str, Any]:
    """Start an analysis of the telemetry in [from, to] (both optional); poll ``GET /api/v1/analyses/{id}``."""
    req = body or AnalysisRequest()
    lo, hi = epoch(req.from_, "from"), epoch(req.to, "to")
    check_range(lo, hi)
    a = await gw.run_db(_create, p, battery_id, lo, hi)
    assert a.id is not None
    aid = a.id
    jobs.spawn(gw, f"battery-analysis-{aid}", lambda: analysis.run(gw, aid))
    return public(a, windows=False)


def _get(db: Session, p: Principal, analysis_id: int) -> Analysis:
    a = db.get(Analysis, analysis_id)
    if a is None or not visible(p, a.owner_id):
        raise NotFound(f"analysis {analysis_id} not found", code="analysis_not_found", details={"analysis_id": analysis_id})
    return a


@router.get("/analyses/{analysis_id}")
async def get_analysis(analysis_id: Id, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Status, verdict, summary and the per-window results (fault class + probability, anomaly score, twin residual)."""
    return public(await gw.run_db(_get, p, analysis_id))


@router.get("/batteries/{battery_id}/analyses")
async def list_analyses(battery_id: Id, p: UserPrincipal, gw: GatewayDep,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The battery's analyses, newest first (without their windows)."""

    def q(db: Session) -> list[dict[str, Any]]:
        battery_for(db, p, battery_id)
        rows = db.exec(select(Analysis).where(col(Analysis.battery_id) == battery_id).order_by(col(Analysis.id).desc())
                       .limit(limit)).all()
        return [public(a, windows=False) for a in rows]

    return {"items": await gw.run_db(q)}


def _save_explanation(db: Session, analysis_id: int, doc: dict[str, Any]) -> None:
    a = db.get(Analysis, analysis_id)
    if a is not None:
        a.explanation = doc
        db.add(a)
        db.commit()


@router.get("/analyses/{analysis_id}/explanation")
async def get_explanation(analysis_id: Id, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """``{"shap": …, "lime": …}`` for the flagged windows (at most 3), each with per-feature contributions and the top
    features named; computed once by the BentoML explain task, then kept with the analysis."""
    a = await gw.run_db(_get, p, analysis_id)
    if a.status != "done":
        raise Conflict(f"analysis {analysis_id} is {a.status}; explanations need a finished analysis", code="analysis_not_done",
                       details={"status": a.status})
    if a.explanation is None:
        doc = await explain.explain(gw, a.windows)
        await gw.run_db(_save_explanation, analysis_id, doc)
    else:
        doc = a.explanation
    return {"analysis_id": analysis_id, "verdict": a.verdict, **doc}
