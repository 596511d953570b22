"""The hot path, ``POST /v2/models/{name}[/versions/{v}]/infer``, served as raw ASGI before FastAPI sees the request.

``GatewayApp.__call__`` (``auth_api.main``) hands matching requests here, so they skip FastAPI's own middleware
(telemetry, body limit, error wrappers), the router, the dependency system and Starlette's Request/Response objects.
Measured on the 2-core box: that stack cost ~0.25 ms of CPU per request, a third of the gateway's whole budget. The
same checks run here, in the same order: body size (413) → credentials and rate limit (401/403/429) → model name
(404) → body (inflated with a bound when compressed) → tensors against the model's config (400, ``tensors``) →
Triton; errors use the KServe v2 shape (``v2_errors``); metrics keep the same labels.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import Receive, Scope, Send

from auth_api.core.limits import body_too_large_message
from auth_api.jobs.ownership import ensure_visible
from auth_api.journal import new_prediction_id
from auth_api.proxy.authorize import authorize
from auth_api.proxy.cache import Answer, Lookup, cache_of, has_outputs
from auth_api.proxy.empty_answer import diagnose
from auth_api.proxy.encoding import inflate
from auth_api.proxy.keep import http_version, keep_of
from auth_api.proxy.records import HEADER, RAW_HEADER, base_record, error_status, failure_record, journal, upstream_code
from auth_api.proxy.tensors import TensorRejected, check_http
from auth_api.proxy.upstream import model_path
from auth_api.proxy.v2_errors import v2_error_response
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
            if (pid := _record_failure(gw, scope, name, version, status, exc, start)) is not None:
                response.headers[HEADER] = pid
            await response(scope, receive, send)
        finally:
            metrics.in_flight.dec()
            state = scope.get("state") or {}
            metrics.count_request(ROUTE_VERSION if version else ROUTE, state.get("model", ""), state.get("version", ""), status,
                                  time.perf_counter() - start)


async def proxy_infer(gw: Gateway, name: str, version: str | None, scope: Scope, receive: Receive,
                      start: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Authorize, check the tensors, forward the (plain) body, journal the history record; (status, headers, body)."""
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
    state["principal"] = p  # from here on a failure is the caller's failed prediction, recorded in history
    state["prediction_id"] = pid = new_prediction_id()
    ensure_visible(gw.extras, p, name)  # another user's model answers as a missing one
    spec = gw.catalog.spec(name, version)
    body = await _read_body(receive, limit)
    enc = hdr.pop(b"content-encoding", None)
    if enc is not None:
        body = inflate(body, enc.decode("latin-1"), limit)
    hlen = hdr.get(b"inference-header-content-length")
    if hlen is not None and not hlen.isdigit():
        raise TensorRejected("Inference-Header-Content-Length must be a byte count", code="invalid_request")
    check_http(spec, body, int(hlen) if hlen is not None else None, gw.settings.gateway_max_tensor_elements)
    cache = cache_of(gw.extras)
    lk = cache.lookup(name, version, body, _int(hlen), hdr.get(b"content-type")) if cache is not None else None
    if lk is not None and cache is not None and (hit := await cache.get(lk)) is not None:
        return _cached_answer(gw, p, pid, lk, hit, body, _int(hlen), start, client[0] if client else None)
    up = await gw.upstream.post_raw(path, body, hdr)
    metrics = gw.metrics
    metrics.observe_upstream("http", name, up.elapsed_s)
    status = up.status
    if status == 200 and not has_outputs(up.content, _int(up.header_length)):
        raise diagnose(body, _int(hlen))  # never a 200 without outputs (Triton's response cache stores errors so)
    if status == 200:
        if lk is not None and cache is not None:
            await cache.put(lk, up.content, _int(up.header_length), next((v for k, v in up.headers if k == b"content-type"), None))
        rec = base_record(p, model=name, version=version, protocol="http", status=200,
                          total_s=time.perf_counter() - start, upstream_s=up.elapsed_s,
                          client_ip=client[0] if client else None)
        _journal_success(gw, pid, rec, ("http", body, _int(hlen), up.content, _int(up.header_length), None))
    else:
        if status == 500 and up.content.startswith(_PARSE_ERRORS):
            status = 400
        journal(gw.journal, pid, failure_record(p, model=name, version=version, protocol="http", status=status,
                                                code=upstream_code(status), total_s=time.perf_counter() - start,
                                                upstream_s=up.elapsed_s, client_ip=client[0] if client else None))
    return status, [*up.headers, (RAW_HEADER, pid.encode())], up.content


def _cached_answer(gw: Gateway, p: Any, pid: str, lk: Lookup, hit: Answer, body: bytes, hlen: int | None, start: float,
                   client_ip: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A prediction cache hit: the stored answer with this request's id, recorded in history like any prediction."""
    headers, content = hit.response(lk.request_id)
    rec = base_record(p, model=lk.model, version=hit.version, protocol="http", status=200,
                      total_s=time.perf_counter() - start, upstream_s=0.0, client_ip=client_ip)
    _journal_success(gw, pid, rec, ("http", body, hlen, content, _int(dict(headers).get(b"inference-header-content-length")),
                                    None))
    return 200, [*headers, (RAW_HEADER, pid.encode())], content


def _journal_success(gw: Gateway, pid: str, rec: dict[str, Any], summary: tuple[Any, ...]) -> None:
    """Journal a 200 with what its model keeps (``proxy.keep``): the summary's bytes, or a bare row."""
    if keep_of(gw, "http").bare(rec["model"]):
        rec["version"] = rec["version"] or http_version(summary[3])
        journal(gw.journal, pid, rec)
    else:
        journal(gw.journal, pid, rec, summary)


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


def _record_failure(gw: Gateway, scope: Scope, name: str, version: str | None, status: int, exc: Exception,
                    start: float) -> str | None:
    """History row for a call refused after the caller was known (bad tensors, unknown version, Triton down...); its id."""
    state = scope.get("state") or {}
    p, pid = state.get("principal"), state.get("prediction_id")
    if p is None or pid is None:  # failed authentication (or before it): not a prediction of anyone's
        return None
    client = scope.get("client")
    try:
        journal(gw.journal, pid, failure_record(p, model=name, version=version, protocol="http", status=status,
                                                code=error_status(exc)[1], total_s=time.perf_counter() - start,
                                                upstream_s=0.0, client_ip=client[0] if client else None))
    except MlstackError:  # the journal itself failed (already logged): the error answer goes out without an id
        return None
    return pid


def _error_response(exc: Exception, path: str) -> Any:
    return v2_error_response(exc, f"POST {path}")
