"""KServe v2 / Open Inference Protocol over HTTP, forwarded to Triton byte for byte (JSON and binary tensors).

Errors on these routes, the gateway's own included, use the protocol's ``{"error": "<message>"}`` (``V2Route``).
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request, Response

from auth_api.api.docs import V2_ERROR_RESPONSES, V2_INFER_OPENAPI
from auth_api.core.errors import NotFound
from auth_api.deps import SECURITY_OPENAPI, EngineerPrincipal, GatewayDep, InferencePrincipal
from auth_api.jobs.ownership import ensure_visible
from auth_api.proxy.fastpath import proxy_infer
from auth_api.proxy.upstream import model_path
from auth_api.proxy.v2_errors import V2Route
from auth_api.state import Gateway
from mlstack.errors import MlstackError

router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=V2Route, responses=V2_ERROR_RESPONSES)


async def _forward_get(gw: GatewayDep, path: str) -> Response:
    up = await gw.upstream.request("GET", path)
    return Response(up.content, status_code=up.status, headers=up.headers)


@router.get("/health/live")
async def health_live(gw: GatewayDep) -> Response:
    """Triton liveness (no auth)."""
    return await _forward_get(gw, "/v2/health/live")


@router.get("/health/ready")
async def health_ready(gw: GatewayDep) -> Response:
    """Triton readiness (no auth)."""
    return await _forward_get(gw, "/v2/health/ready")


@router.get("")
async def server_metadata(_: InferencePrincipal, gw: GatewayDep) -> Response:
    """Triton server metadata."""
    return await _forward_get(gw, "/v2")


@router.post("/repository/index")
async def repository_index(request: Request, _: InferencePrincipal, gw: GatewayDep) -> Response:
    """The models in the repository and their state (``{"ready": true}`` lists the ready ones only)."""
    body = await request.body()
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        raise MlstackError('the repository index body must be JSON, e.g. {"ready": true}', code="invalid_request") from None
    ready = isinstance(doc, dict) and doc.get("ready") is True
    # Only the one documented option is forwarded, re-encoded: Triton never parses client bytes on this route.
    up = await gw.upstream.request("POST", "/v2/repository/index", b'{"ready":true}' if ready else b"{}",
                                   {"content-type": "application/json"})
    return Response(up.content, status_code=up.status, headers=up.headers)


@router.get("/models/stats")
async def all_model_stats(_: EngineerPrincipal, gw: GatewayDep) -> Response:
    """Inference statistics of every model (Triton extension; engineers and admins)."""
    return await _forward_get(gw, "/v2/models/stats")


@router.get("/models/{name}/stats")
@router.get("/models/{name}/versions/{version}/stats")
async def model_stats(name: str, _: EngineerPrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Inference statistics of a model (Triton extension; engineers and admins)."""
    return await _forward_get(gw, model_path(name, version) + "/stats")


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, p: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model metadata (inputs, outputs, versions)."""
    ensure_visible(gw.extras, p, name)
    return await _forward_get(gw, model_path(name, version))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, p: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model readiness."""
    ensure_visible(gw.extras, p, name)
    return await _forward_get(gw, model_path(name, version) + "/ready")


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
async def model_config(name: str, p: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model configuration (Triton extension)."""
    ensure_visible(gw.extras, p, name)
    return await _forward_get(gw, model_path(name, version) + "/config")


@router.post("/models/{name}/infer", openapi_extra={**SECURITY_OPENAPI, **V2_INFER_OPENAPI})
@router.post("/models/{name}/versions/{version}/infer", openapi_extra={**SECURITY_OPENAPI, **V2_INFER_OPENAPI})
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """Inference, forwarded unchanged; a successful call's history row is summarised later by the writer.

    Served by ``auth_api.proxy.fastpath`` before routing; this route documents it and serves the rare fallthrough.
    """
    return await forward_infer(request, name, version)


async def forward_infer(request: Request, name: str, version: str | None) -> Response:
    """The hot path (``auth_api.proxy.fastpath.proxy_infer``) behind FastAPI: CORS requests and the OpenAPI route."""
    gw: Gateway = request.app.state.gateway
    status, headers, body = await proxy_infer(gw, name, version, request.scope, request.receive, time.perf_counter())
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def not_served(path: str) -> Response:
    """Triton endpoints the gateway does not expose (shared memory, tracing, logging, model load/unload)."""
    raise NotFound(f"'/v2/{path[:100]}' is not served by the gateway", code="endpoint_not_found")
