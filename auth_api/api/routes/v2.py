"""KServe v2 / Open Inference Protocol over HTTP, forwarded to Triton byte for byte (JSON and binary tensors)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from auth_api.deps import SECURITY_OPENAPI, GatewayDep, InferencePrincipal, authorize_inference
from auth_api.proxy.records import base_record
from auth_api.proxy.summaries import http_finisher
from auth_api.proxy.upstream import FORWARD_REQUEST_HEADERS
from auth_api.state import Gateway
from mlstack.errors import ModelNotFound
from mlstack.repository.layout import NAME_RE

router = APIRouter(prefix="/v2", tags=["kserve v2"])
# Triton 2.5x answers 500 (not 400) to request bodies it cannot parse; those are the client's errors.
_PARSE_ERRORS = (b'{"error":"failed to parse', b'{"error":"Unable to parse')


def _model_path(name: str, version: str | None) -> str:
    if not NAME_RE.fullmatch(name):
        raise ModelNotFound(name)
    if version is not None and not (version.isdigit() and not version.startswith("0")):
        raise ModelNotFound(name, version)
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def _hlen(headers: dict[str, str]) -> int | None:
    v = headers.get("inference-header-content-length")
    return int(v) if v and v.isdigit() else None


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
    return await _forward_get(gw, _model_path(name, version))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, _: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model readiness."""
    return await _forward_get(gw, _model_path(name, version) + "/ready")


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
async def model_config(name: str, _: InferencePrincipal, gw: GatewayDep, version: str | None = None) -> Response:
    """Model configuration (Triton extension)."""
    return await _forward_get(gw, _model_path(name, version) + "/config")


@router.post("/models/{name}/infer", openapi_extra=SECURITY_OPENAPI)
@router.post("/models/{name}/versions/{version}/infer", openapi_extra=SECURITY_OPENAPI)
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """Inference, forwarded unchanged; a successful call's history row is summarised later by the writer.

    Served by ``auth_api.proxy.fastpath`` before routing; this route documents it and serves the rare fallthrough.
    """
    return await forward_infer(request, name, version)


async def forward_infer(request: Request, name: str, version: str | None) -> Response:
    """The hot path: authorize, forward the body untouched, enqueue the history record, return Triton's bytes."""
    start = time.perf_counter()
    gw: Gateway = request.app.state.gateway
    p = await authorize_inference(request, gw)
    path = _model_path(name, version) + "/infer"
    request.state.model, request.state.version = name, version or ""
    body = await request.body()
    hdrs = request.headers
    fwd = {k: v for k in FORWARD_REQUEST_HEADERS if (v := hdrs.get(k)) is not None}
    up = await gw.upstream.request("POST", path, body, fwd)
    gw.metrics.upstream_latency.labels("http", name).observe(up.elapsed_s)
    if up.status == 200:  # history holds successful predictions; failures are counted in metrics
        rec = base_record(p, model=name, version=version, protocol="http", status=200, total_s=time.perf_counter() - start,
                          upstream_s=up.elapsed_s, client_ip=request.client.host if request.client else None)
        await gw.writer.put(rec, http_finisher(body, _hlen(fwd), up.content, _hlen(up.headers), gw.catalog.labels,
                                               fwd.get("content-encoding")))
    elif up.status == 500 and up.content.startswith(_PARSE_ERRORS):
        return Response(up.content, status_code=400, headers=up.headers)
    return Response(up.content, status_code=up.status, headers=up.headers)
