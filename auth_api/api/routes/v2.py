"""KServe v2 / Open Inference Protocol over HTTP, forwarded to Triton byte for byte (JSON and binary tensors)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from auth_api.deps import SECURITY_OPENAPI, GatewayDep, InferencePrincipal
from auth_api.proxy.fastpath import proxy_infer
from auth_api.proxy.upstream import model_path
from auth_api.state import Gateway

router = APIRouter(prefix="/v2", tags=["kserve v2"])


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


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, _: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model metadata (inputs, outputs, versions)."""
    return await _forward_get(gw, model_path(name, version))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, _: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model readiness."""
    return await _forward_get(gw, model_path(name, version) + "/ready")


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
async def model_config(name: str, _: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model configuration (Triton extension)."""
    return await _forward_get(gw, model_path(name, version) + "/config")


@router.post("/models/{name}/infer", openapi_extra=SECURITY_OPENAPI)
@router.post("/models/{name}/versions/{version}/infer", openapi_extra=SECURITY_OPENAPI)
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
