"""``/api/v1/batteries/{id}/data``: upload telemetry (CSV/TXT/XLSX file or a JSON batch) and read it back downsampled."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from apps.battery import store, telemetry
from apps.battery.access import battery_for, check_range, epoch, iso
from apps.battery.telemetry import MAX_ROWS, Parsed, TooManyRows
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import InvalidInput
from auth_api.deps import GatewayDep, SessionDep, UserPrincipal
from auth_api.models import RequestBody
from mlstack.errors import MlstackError

router = APIRouter(prefix="/batteries", tags=["battery telemetry"], dependencies=[Depends(no_unknown_query)])

_UPLOAD_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "CSV, TXT or XLSX; header aliases in docs/battery_fleet.md"},
        "sheet": {"type": "string", "description": "XLSX sheet (default: the first)"},
        "start": {"type": "string", "description": "numeric times are seconds after this instant (ISO-8601)"}}}},
    "application/json": {"schema": {"type": "object", "required": ["samples"], "properties": {
        "samples": {"type": "array", "items": {"type": "object"}}, "start": {"type": "string"}}},
        "example": {"samples": [{"time": "2026-12-01T08:00:00Z", "voltage": 3.71, "current": 1.5, "temperature": 24.8,
                                 "soc": 0.82}]}}}}}


class UnsupportedMediaType(MlstackError):
    code = "unsupported_media_type"
    status = 415


class SampleBatch(RequestBody):
    samples: list[dict[str, Any]]
    start: str | float | None = None


def _read_file(data: bytes, filename: str, sheet: str | None, start: float | None) -> Parsed:
    from mlstack.tables import TableLimits, read_table  # the one table parser (dataset uploads use it too)

    if not data:
        raise InvalidInput("the file is empty", code="empty_file", details={"field": "file"})
    if not filename.lower().endswith((".xlsx", ".xlsm")) and data.count(b"\n") > MAX_ROWS + 1:
        raise TooManyRows(data.count(b"\n") - 1)  # counted before parsing: a huge file costs one scan, not a parse
    df = read_table(data, filename, sheet=sheet, limits=TableLimits(max_rows=MAX_ROWS))
    return telemetry.parse_frame(df, start=start)


def _store(db: Session, p: Principal, battery_id: int, parsed: Parsed) -> dict[str, Any]:
    battery_for(db, p, battery_id)
    conn = db.connection()
    inserted = store.insert(conn, battery_id, parsed)
    db.commit()
    report = parsed.report()
    return {**report, "inserted": inserted, "duplicates_skipped": report["accepted"] - inserted,
            "from": iso(float(parsed.ts[0])), "to": iso(float(parsed.ts[-1]))}


@router.post("/{battery_id}/data", openapi_extra=_UPLOAD_DOC)
async def upload(battery_id: Id, request: Request, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Store telemetry; refused rows are listed (``rejected: [{row, reason}]``), already stored samples are skipped."""
    await gw.run_db(battery_for, p, battery_id)  # 404 before reading a large body
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("send the telemetry as the multipart field 'file'", code="missing_file", details={"field": "file"})
        sheet, start = form.get("sheet"), epoch(form.get("start"), "start")
        parsed = await run_in_threadpool(_read_file, await file.read(), file.filename or "upload.csv",
                                         sheet if isinstance(sheet, str) and sheet else None, start)
    elif ctype in ("application/json", ""):
        try:
            batch = SampleBatch.model_validate_json(await request.body())
        except ValueError as exc:
            raise InvalidInput("the body must be {\"samples\": [...]}", code="invalid_request",
                               details={"reason": str(exc)[:500]}) from None
        if len(batch.samples) > MAX_ROWS:
            raise TooManyRows(len(batch.samples))
        parsed = await run_in_threadpool(telemetry.parse_samples, batch.samples, start=epoch(batch.start, "start"))
    else:
        raise UnsupportedMediaType(f"unsupported content type '{ctype[:64]}': send multipart/form-data (file) or "
                                   "application/json")
    telemetry.require_usable(parsed)
    return await gw.run_db(_store, p, battery_id, parsed)


def _series(db: Session, p: Principal, battery_id: int, lo: float | None, hi: float | None,
            every: float | None) -> dict[str, Any]:
    battery_for(db, p, battery_id)
    conn = db.connection()
    n, first, last = store.span(conn, battery_id, lo, hi)
    out: dict[str, Any] = {"battery_id": battery_id, "from": iso(lo if lo is not None else first),
                           "to": iso(hi if hi is not None else last), "count": n, "max_points": store.MAX_POINTS}
    if n == 0 or first is None or last is None:
        return {**out, "every_s": every, "downsampled": False, "points": []}
    start = lo if lo is not None else first
    need = max(1.0, math.ceil((last - start + 1) / store.MAX_POINTS))
    note = None
    if every is None and n > store.MAX_POINTS:
        every, note = need, f"{n} samples: averaged into {need:g} s buckets to return at most {store.MAX_POINTS} points"
    elif every is not None and (last - start) / every >= store.MAX_POINTS:
        note = f"every={every:g} s would give more than {store.MAX_POINTS} points; raised to {need:g} s"
        every = need
    rows = store.buckets(conn, battery_id, start, every, hi) if every else store.raw(conn, battery_id, lo, hi)
    points = [{"time": iso(r.pop("t")), **r} for r in rows]
    return {**out, "every_s": every, "downsampled": every is not None, "note": note, "points": points}


@router.get("/{battery_id}/data")
def read_data(battery_id: Id, p: UserPrincipal, db: SessionDep,
              from_: Annotated[str | None, Query(alias="from", description="ISO-8601 or epoch seconds")] = None,
              to: Annotated[str | None, Query(description="ISO-8601 or epoch seconds")] = None,
              every: Annotated[float | None, Query(ge=1, le=366 * 86400, description="bucket (s): the means per bucket")] = None,
              ) -> dict[str, Any]:
    """The series in [from, to]: raw samples, or bucket means (``every``); at most ``max_points`` points, always."""
    lo, hi = epoch(from_, "from"), epoch(to, "to")
    check_range(lo, hi)
    return _series(db, p, battery_id, lo, hi, every)
