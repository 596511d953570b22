"""Liveness, readiness (database + Triton) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import UpstreamTimeout, UpstreamUnavailable
from auth_api.deps import GatewayDep

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "database or Triton not ready"}})
async def ready(gw: GatewayDep) -> Any:
    """Ready when the database answers and Triton reports ready."""

    def db_ok() -> bool:
        try:
            with gw.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    checks = {"database": await run_in_threadpool(db_ok), "triton": False}
    try:
        up = await gw.upstream.request("GET", "/v2/health/ready", timeout=2.0)
        checks["triton"] = up.status == 200
    except (UpstreamUnavailable, UpstreamTimeout):
        pass
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    return JSONResponse({"error": {"code": "not_ready", "message": "not ready", "details": checks}}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(gw: GatewayDep) -> Response:
    """Prometheus exposition of this app's registry."""
    gw.metrics.history_queue_depth.set(gw.writer.queue.qsize())
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
