"""Liveness, readiness (each dependency and each model, auth_api/readiness.py) and Prometheus metrics."""

from __future__ import annotations

import hmac
import os
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from auth_api import workers
from auth_api.core.errors import Unauthorized
from auth_api.deps import GatewayDep
from auth_api.readiness import readiness_of

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up (and, under auth_api.serve, which worker answered)."""
    info = workers.current()
    return {"status": "ok"} if info is None else {"status": "ok", "worker": str(info.index), "pid": str(os.getpid())}


@router.get("/health/ready", responses={503: {"description": "a required dependency (database or Triton) is not ready"}})
async def ready(gw: GatewayDep) -> Any:
    """Each dependency's state (``up`` / ``down`` / ``not responding``), whether it is required, and each model's state.

    Ready while the required ones (database, Triton) are up; BentoML and Redis are optional: without them the answer
    stays 200 and ``degraded`` names them (their ``impact`` says what is unavailable). A model Triton cannot load never
    makes the gateway unready: the other models serve. Answers within ~0.5 s whatever hangs behind it (probes are
    bounded and cached ~0.5 s).
    """
    ok, body = await readiness_of(gw).report()
    if ok:
        return body
    failing = ", ".join(body["failing"])
    return JSONResponse({"error": {"code": "not_ready", "message": f"not ready: {failing}", "details": body}}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, gw: GatewayDep) -> Response:
    """Prometheus exposition of this app's registry (every worker's, labelled ``worker``, under auth_api.serve).

    Behind ``Authorization: Bearer`` when a metrics token is set.
    """
    token = gw.settings.gateway_metrics_token
    if token is not None and token.get_secret_value():
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.get_secret_value().encode()):
            raise Unauthorized("/metrics requires 'Authorization: Bearer <MLSTACK_GATEWAY_METRICS_TOKEN>'",
                               code="metrics_token_required")
    return Response(await workers.exposition(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
