"""The digital twin: ``POST .../twin`` fits it, ``GET .../twin`` reads it, ``POST .../twin/simulate`` starts a run
(202 + id), ``GET .../twin/runs/{id}`` its status and result (series + summary)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from apps.battery import jobs, store, twin, twin_runs
from apps.battery.access import battery_for, check_range, epoch, iso
from apps.battery.analysis import _ambient
from apps.battery.models import Twin, TwinRun
from apps.battery.routes.analyses import MAX_SAMPLES
from apps.battery.windows import ambient_of
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import InvalidInput, NotFound
from auth_api.deps import GatewayDep, UserPrincipal
from auth_api.models import utcnow
from auth_api.state import Gateway

router = APIRouter(prefix="/batteries", tags=["battery twin"], dependencies=[Depends(no_unknown_query)])


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str | float | None = Field(None, alias="from", description="ISO-8601 or epoch seconds (default: first sample)")
    to: str | float | None = Field(None, description="ISO-8601 or epoch seconds (default: last sample)")


class SimulateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"profile": {"kind": "constant", "c_rate": 0.5, "duration_s": 3600, "rest_s": 600}, "hours": 2}]})
    profile: dict[str, Any] = Field(description="durations_s + currents_a, or kind constant | pulses | drive_cycle (repeated)")
    hours: float = Field(gt=0, le=twin_runs.MAX_HOURS)
    initial_soc: float = Field(1.0, gt=0, le=1)


def _twin_public(t: Twin) -> dict[str, Any]:
    return {"battery_id": t.battery_id, "params": t.params, "fit": t.fit, "fitted_at": t.fitted_at}


def _fit_input(db: Session, p: Principal, battery_id: int, lo: float | None, hi: float | None) -> tuple[Any, float, float, float]:
    b = battery_for(db, p, battery_id)
    n, _, _ = store.span(db.connection(), battery_id, lo, hi)
    if n > MAX_SAMPLES:
        raise InvalidInput(f"{n} samples in the range; a fit reads at most {MAX_SAMPLES}: narrow from/to",
                           code="range_too_large", details={"limit": MAX_SAMPLES, "samples": n})
    s = store.read(db.connection(), battery_id, lo, hi)
    amb = ambient_of(s, slice(0, len(s.ts)), _ambient(b)) if len(s.ts) else 25.0
    return s, b.nominal_voltage_v, b.nominal_capacity_ah, amb


def _save_twin(db: Session, battery_id: int, params: dict[str, Any], fit: dict[str, Any]) -> Twin:
    t = db.get(Twin, battery_id) or Twin(battery_id=battery_id, params=params, fit=fit)
    t.params, t.fit, t.fitted_at = params, fit, utcnow()
    db.add(t)
    db.commit()
    db.refresh(t)
    return t


@router.post("/{battery_id}/twin")
async def fit_twin(battery_id: Id, p: UserPrincipal, gw: GatewayDep, body: FitRequest | None = None) -> dict[str, Any]:
    """Fit capacity, R0, R1, C1 (and the start SoC without a SoC column) of the equivalent-circuit cell to the telemetry."""
    req = body or FitRequest()
    lo, hi = epoch(req.from_, "from"), epoch(req.to, "to")
    check_range(lo, hi)
    s, nominal_v, nominal_ah, amb = await gw.run_db(_fit_input, p, battery_id, lo, hi)
    data = twin.prepare(s, nominal_v, amb)

    def work() -> tuple[dict[str, Any], dict[str, Any]]:
        return twin.fit(data, nominal_ah)

    params, fit = await run_in_threadpool(work)
    fit.update({"from": iso(fit.pop("from_ts")), "to": iso(fit.pop("to_ts"))})
    return _twin_public(await gw.run_db(_save_twin, battery_id, params, fit))


def _twin_of(db: Session, p: Principal, battery_id: int) -> Twin:
    battery_for(db, p, battery_id)
    t = db.get(Twin, battery_id)
    if t is None:
        raise NotFound(f"battery {battery_id} has no twin yet: POST .../twin fits one", code="twin_not_found",
                       details={"battery_id": battery_id})
    return t


@router.get("/{battery_id}/twin")
async def get_twin(battery_id: Id, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    return _twin_public(await gw.run_db(_twin_of, p, battery_id))


def _run_public(r: TwinRun) -> dict[str, Any]:
    return {"id": r.id, "battery_id": r.battery_id, "status": r.status, "request": r.request, "result": r.result,
            "error": r.error, "created_at": r.created_at, "finished_at": r.finished_at}


def _new_run(db: Session, p: Principal, battery_id: int, req: dict[str, Any]) -> tuple[TwinRun, dict[str, Any]]:
    t = _twin_of(db, p, battery_id)
    twin_runs.profile_of(req["profile"], float(t.params["capacity_ah"]))  # a bad profile is a 422 now, not a failed run
    r = TwinRun(battery_id=battery_id, request=req)
    db.add(r)
    db.commit()
    db.refresh(r)
    return r, dict(t.params)


def _mark_running(db: Session, run_id: int) -> None:
    r = db.get(TwinRun, run_id)
    if r is not None:
        r.status = "running"
        db.add(r)
        db.commit()


def _end_run(db: Session, run_id: int, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
    r = db.get(TwinRun, run_id)
    if r is not None:
        r.status, r.result, r.error, r.finished_at = ("done" if error is None else "failed"), result, error, utcnow()
        db.add(r)
        db.commit()


async def _simulate(gw: Gateway, run_id: int, params: dict[str, Any], req: SimulateRequest) -> None:
    try:
        await gw.run_db(_mark_running, run_id)
        prof = twin_runs.profile_of(req.profile, float(params["capacity_ah"]))
        result = await run_in_threadpool(twin_runs.simulate_run, params, prof, req.hours, req.initial_soc)
        await gw.run_db(_end_run, run_id, result, None)
    except Exception as exc:
        await gw.run_db(_end_run, run_id, None, jobs.error_body(exc))


@router.post("/{battery_id}/twin/simulate", status_code=status.HTTP_202_ACCEPTED)
async def simulate(battery_id: Id, body: SimulateRequest, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Run the twin through a load profile for ``hours`` in the background; poll ``GET .../twin/runs/{id}``."""
    r, params = await gw.run_db(_new_run, p, battery_id, body.model_dump())
    assert r.id is not None
    rid = r.id
    jobs.spawn(gw, f"battery-twin-run-{rid}", lambda: _simulate(gw, rid, params, body))
    return _run_public(r)


@router.get("/{battery_id}/twin/runs/{run_id}")
async def get_run(battery_id: Id, run_id: Id, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    def q(db: Session) -> TwinRun:
        battery_for(db, p, battery_id)
        r = db.exec(select(TwinRun).where(col(TwinRun.id) == run_id, col(TwinRun.battery_id) == battery_id)).first()
        if r is None:
            raise NotFound(f"twin run {run_id} not found", code="twin_run_not_found", details={"run_id": run_id})
        return r

    return _run_public(await gw.run_db(q))
