"""The hot path, ``POST /v2/models/{name}[/versions/{v}]/infer``, served as raw ASGI before FastAPI sees the request.

``GatewayApp.__call__`` (``auth_api.main``) hands matching requests here, so they skip FastAPI's own middleware
(telemetry, body limit, error wrappers), the router, the dependency system and Starlette's Request/Response objects.
Measured on the 2-core box: that stack cost ~0.25 ms of CPU per request, a third of the gateway's whole budget. The
same checks run here, in the same order: body size (413) → credentials and rate limit (401/403/429) → model name
(404) → body → Triton; errors keep the one JSON error shape; metrics keep the same labels.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import Receive, Scope, Send

from auth_api.core.errors import RateLimited, error_response
from auth_api.core.limits import body_too_large_message
from auth_api.proxy.authorize import authorize
from auth_api.proxy.records import base_record
from auth_api.proxy.summaries import http_finisher
from auth_api.proxy.upstream import model_path
from auth_api.state import Gateway
from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)
INFER_RE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
ROUTE = "/v2/models/{name}/infer"
ROUTE_VERSION = "/v2/models/{name}/versions/{version}/infer"
# Triton 2.5x answers 500 (not 400) to request bodies it cannot parse; those are the client's errors.
_PARSE_ERRORS = (b'{"error":"failed to parse', b'{"error":"Unable to parse')
_WANTED = {b"authorization", b"x-api-key", b"content-length", b"content-type", b"inference-header-content-length",
           b"content-encoding"}


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class InferFastPath:
    """Serves v2 infer calls for one app; ``match`` says whether a request is one (CORS requests go the long way)."""

    def __init__(self, cors: bool):
        self.cors = cors

    def match(self, scope: Scope) -> re.Match[str] | None:
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith("/v2/models/") or not path.endswith("/infer"):
            return None
        if self.cors and any(k == b"origin" for k, _ in scope["headers"]):
            return None  # CORSMiddleware adds its headers on the full stack
        return INFER_RE.fullmatch(path)

    async def serve(self, gw: Gateway, m: re.Match[str], scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        name, version = m.group(1), m.group(2)
        metrics = gw.metrics
        metrics.in_flight.inc()
        status = 500
        try:
            status, headers, body = await proxy_infer(gw, name, version, scope, receive, start)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except _ClientGone:
            status = 499
        except Exception as exc:  # every failure becomes the JSON error body
            response = _error_response(exc, scope["path"])
            status = response.status_code
            await response(scope, receive, send)
        finally:
            metrics.in_flight.dec()
            state = scope.get("state") or {}
            metrics.count_request(ROUTE_VERSION if version else ROUTE, state.get("model", ""), state.get("version", ""), status,
                                  time.perf_counter() - start)


async def proxy_infer(gw: Gateway, name: str, version: str | None, scope: Scope, receive: Receive,
                      start: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Authorize, forward the body untouched, enqueue the history record; (status, ASGI headers, body) of the answer."""
    hdr: dict[bytes, bytes] = {k: v for k, v in scope["headers"] if k in _WANTED}
    limit = gw.settings.gateway_max_body_bytes
    clen = hdr.get(b"content-length")
    if clen is not None and clen.isdigit() and int(clen) > limit:
        raise _TooLarge(limit)
    auth, key = hdr.get(b"authorization"), hdr.get(b"x-api-key")
    client = scope.get("client")
    p = await authorize(gw, auth.decode("latin-1") if auth else None, key.decode("latin-1") if key else None,
                        client[0] if client else None)
    path = model_path(name, version) + "/infer"
    state = scope.setdefault("state", {})  # metrics label the model once the caller and the name are known good
    state["model"], state["version"] = name, version or ""
    body = await _read_body(receive, limit)
    up = await gw.upstream.post_raw(path, body, hdr)
    metrics = gw.metrics
    metrics.observe_upstream("http", name, up.elapsed_s)
    status = up.status
    if status == 200:  # history holds successful predictions; failures are counted in metrics
        rec = base_record(p, model=name, version=version, protocol="http", status=200,
                          total_s=time.perf_counter() - start, upstream_s=up.elapsed_s,
                          client_ip=client[0] if client else None)
        enc = hdr.get(b"content-encoding")
        await gw.writer.put(rec, http_finisher(body, _int(hdr.get(b"inference-header-content-length")), up.content,
                                           _int(up.header_length), gw.catalog.labels, enc.decode("latin-1") if enc else None))
    elif status == 500 and up.content.startswith(_PARSE_ERRORS):
        status = 400
    return status, up.headers, up.content


class _TooLarge(MlstackError):
    code = "body_too_large"
    status = 413

    def __init__(self, limit: int):
        super().__init__(body_too_large_message(limit), details={"max_bytes": limit})
        self.limit = limit


def _int(v: bytes | None) -> int | None:
    return int(v) if v and v.isdigit() else None


async def _read_body(receive: Receive, limit: int) -> bytes:
    msg = await receive()
    if msg["type"] != "http.request":
        raise _ClientGone()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body", False):
        if len(body) > limit:
            raise _TooLarge(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise _ClientGone()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge(limit)
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _error_response(exc: Exception, path: str) -> Any:
    if isinstance(exc, _TooLarge):  # the rest of the body may still be on the wire
        return error_response(exc.status, exc.code, exc.message, exc.details, headers={"Connection": "close"})
    if isinstance(exc, RateLimited):
        return error_response(exc.status, exc.code, exc.message, exc.details,
                              headers={"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))})
    if isinstance(exc, MlstackError):
        return error_response(exc.status, exc.code, exc.message, exc.details,
                              headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
    logger.error("unhandled error on POST %s", path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")
