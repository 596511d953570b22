"""Liveness, readiness (database, Triton and each model) and Prometheus metrics."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import Unauthorized, UpstreamTimeout, UpstreamUnavailable
from auth_api.deps import GatewayDep
from auth_api.state import Gateway
from mlstack.repository.sandbox import sanitize

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def model_states(index: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Triton's repository index -> per model ``{"state", "versions", "reason"?}``.

    ``ready``: a version serves; ``loading``: one is being loaded and none serves yet; ``broken``: Triton failed to
    load it (its reason, paths removed); ``unloaded``: deliberately not served.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for m in index:
        by_name.setdefault(str(m.get("name", "")), []).append(m)
    out: dict[str, dict[str, Any]] = {}
    for name, entries in sorted(by_name.items()):
        states = {str(e.get("version", "")): str(e.get("state", "UNAVAILABLE")) for e in entries}
        failures = [str(e.get("reason", "")) for e in entries
                    if e.get("state") == "UNAVAILABLE" and e.get("reason") not in (None, "", "unloaded")]
        item: dict[str, Any] = {"versions": states}
        if "READY" in states.values():
            item["state"] = "ready"
        elif "LOADING" in states.values():
            item["state"] = "loading"
        elif failures:
            item["state"] = "broken"
        else:
            item["state"] = "unloaded"
        if failures:
            item["reason"] = sanitize(failures[0], 500)
        out[name] = item
    return out


async def _triton(gw: Gateway) -> tuple[bool, dict[str, dict[str, Any]] | None]:
    """(server ready, per-model states or None when Triton cannot be reached)."""
    try:
        up = await gw.upstream.request("GET", "/v2/health/ready", timeout=2.0)
        index = await gw.upstream.request("POST", "/v2/repository/index", content=b"{}", timeout=2.0)
    except (UpstreamUnavailable, UpstreamTimeout):
        return False, None
    models = model_states(json.loads(index.content)) if index.status == 200 else None
    return up.status == 200, models


@router.get("/health/ready", responses={503: {"description": "database or Triton not ready"}})
async def ready(gw: GatewayDep) -> Any:
    """Ready when the database answers and Triton is up; each model's state is reported beside.

    A model Triton cannot load never makes the gateway unready: the other models serve. (In poll mode Triton retries a
    broken model at every poll, so it alternates between ``loading`` and ``broken``; neither holds readiness down.)
    """

    def db_ok() -> bool:
        try:
            with gw.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    triton_ok, models = await _triton(gw)
    checks = {"database": await run_in_threadpool(db_ok), "triton": triton_ok}
    models = models or {}
    broken = sorted(n for n, m in models.items() if m["state"] == "broken")
    if all(checks.values()):
        return {"status": "ready", "checks": checks, "models": models, "broken": broken}
    return JSONResponse({"error": {"code": "not_ready", "message": "not ready", "details": checks}}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, gw: GatewayDep) -> Response:
    """Prometheus exposition of this app's registry; behind ``Authorization: Bearer`` when a metrics token is set."""
    token = gw.settings.gateway_metrics_token
    if token is not None and token.get_secret_value():
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.get_secret_value().encode()):
            raise Unauthorized("/metrics requires 'Authorization: Bearer <MLSTACK_GATEWAY_METRICS_TOKEN>'",
                               code="metrics_token_required")
    gw.metrics.history_queue_depth.set(gw.writer.queue.qsize())
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
