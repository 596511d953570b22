"""Thermal images: ``POST /api/v1/batteries/{id}/thermal`` (16-bit PNG in centi-kelvin, or a CSV grid of °C) -> stats,
hotspots, the image kept in object storage (signed URL) and a ``thermal`` alert event with ΔT as its value."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from apps.battery import alerts, thermal
from apps.battery.access import battery_for
from apps.battery.models import ThermalImage
from auth_api import stored_inputs
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import InvalidInput, NotFound, UpstreamUnavailable
from auth_api.deps import GatewayDep, UserPrincipal
from auth_api.state import Gateway

router = APIRouter(prefix="/batteries", tags=["battery thermal"], dependencies=[Depends(no_unknown_query)])
_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "16-bit grayscale PNG (centi-kelvin) or CSV grid of °C"}}}}}}}


def _public(gw: Gateway, t: ThermalImage, base_url: str) -> dict[str, Any]:
    store = stored_inputs.store_of(gw)
    url = store.url(t.object_key) if store is not None else None
    if url and url.startswith("/"):
        url = base_url.rstrip("/") + url
    return {"id": t.id, "battery_id": t.battery_id, "created_at": t.created_at, "content_type": t.content_type,
            "stats": t.stats, "hotspots": t.hotspots, "image_url": url,
            "image_url_expires_in_s": gw.settings.storage_url_expiry_s if url else None}


def _record(db: Session, p: Principal, battery_id: int, key: str, ctype: str, stats: dict[str, Any],
            spots: list[dict[str, Any]]) -> ThermalImage:
    b = battery_for(db, p, battery_id)
    t = ThermalImage(battery_id=battery_id, object_key=key, content_type=ctype, width=stats["width"], height=stats["height"],
                     stats=stats, hotspots=spots)
    db.add(t)
    db.flush()
    ev = alerts.event("thermal", None, b.owner_id, battery_id, f"thermal:{t.id}", value=stats["delta_t_c"])
    ids = alerts.evaluate(db.connection(), [ev])
    t.stats = {**stats, "alerts": [str(i) for i in ids]}
    db.add(t)
    db.commit()
    db.refresh(t)
    return t


@router.post("/{battery_id}/thermal", openapi_extra=_DOC, status_code=201)
async def upload_thermal(battery_id: Id, request: Request, p: UserPrincipal, gw: GatewayDep,
                         threshold_c: Annotated[float | None, Query(ge=-60, le=400, description="hotspot threshold "
                                                                    "(°C); default: the image's median + 5 °C")] = None,
                         min_area: Annotated[int, Query(ge=1, le=1_000_000, description="smallest hotspot (pixels)")] = 4,
                         ) -> dict[str, Any]:
    """Max, mean, ΔT (max - min) and hotspot regions (bbox, area, max) of a radiometric image; the image is kept."""
    await gw.run_db(battery_for, p, battery_id)
    if (request.headers.get("content-type") or "").split(";")[0].strip().lower() != "multipart/form-data":
        raise InvalidInput("send the image as the multipart field 'file'", code="missing_file", details={"field": "file"})
    form = await request.form(max_files=1, max_fields=2)
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise InvalidInput("send the image as the multipart field 'file'", code="missing_file", details={"field": "file"})
    data = await file.read()
    if not data:
        raise InvalidInput("the file is empty", code="empty_file", details={"field": "file"})

    def work() -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        temps, kind = thermal.decode(data, file.filename or "")
        stats, spots = thermal.analyse(temps, threshold_c, min_area)
        return {**stats, "format": kind}, spots, kind

    stats, spots, kind = await run_in_threadpool(work)
    store = stored_inputs.store_of(gw)
    if store is None or p.user_id is None:
        raise UpstreamUnavailable("object storage is not configured", code="storage_unavailable")
    owner = p.user_id
    ref = await run_in_threadpool(store.storage.put, data, "image/png" if kind == "png16" else "text/plain", owner)
    t = await gw.run_db(_record, p, battery_id, ref.key, ref.content_type, stats, spots)
    return _public(gw, t, str(request.base_url))


@router.get("/{battery_id}/thermal")
async def list_thermal(battery_id: Id, request: Request, p: UserPrincipal, gw: GatewayDep,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    def q(db: Session) -> list[ThermalImage]:
        battery_for(db, p, battery_id)
        return list(db.exec(select(ThermalImage).where(col(ThermalImage.battery_id) == battery_id)
                            .order_by(col(ThermalImage.id).desc()).limit(limit)).all())

    return {"items": [_public(gw, t, str(request.base_url)) for t in await gw.run_db(q)]}


@router.get("/{battery_id}/thermal/{image_id}")
async def get_thermal(battery_id: Id, image_id: Id, request: Request, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    def q(db: Session) -> ThermalImage:
        battery_for(db, p, battery_id)
        t = db.get(ThermalImage, image_id)
        if t is None or t.battery_id != battery_id:
            raise NotFound(f"thermal image {image_id} not found", code="thermal_not_found", details={"image_id": image_id})
        return t

    return _public(gw, await gw.run_db(q), str(request.base_url))
