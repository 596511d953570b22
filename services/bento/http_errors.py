"""Every error leaves the service as ``{"error": {"code", "message", "details"}}`` with the right status.

Our APIs return that body themselves (``guard``); BentoML's own errors (request validation, unexpected
exceptions) have other shapes, so an ASGI middleware rewrites any error response that is not in ours.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

from starlette.responses import JSONResponse

from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
         415: "unsupported_media_type", 422: "invalid_request", 503: "unavailable", 504: "timeout"}


# A 503 is a transient state (worker restarting, service shutting down, overload): tell clients when to retry.
RETRY_AFTER = (b"retry-after", b"1")


def error_response(exc: MlstackError) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER[1].decode()} if exc.status == 503 else None
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def _unexpected(name: str) -> JSONResponse:
    logger.exception("unexpected error in %s", name)
    return JSONResponse({"error": {"code": "internal", "message": "unexpected server error; see the service log",
                                   "details": {}}}, status_code=500)


def guard(func: F) -> F:
    """Domain errors -> their status and the JSON body; anything else -> 500 without a stack trace."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except MlstackError as exc:
                return error_response(exc)
            except Exception:
                return _unexpected(func.__name__)

        return cast(F, awrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlstackError as exc:
            return error_response(exc)
        except Exception:
            return _unexpected(func.__name__)

    return cast(F, wrapper)


def _ours(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict) and {"code", "message"} <= set(data["error"])


def _reshape(status: int, body: bytes) -> bytes:
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")[:500]
    if isinstance(data, list) and len(data) == 1:  # BentoML 1.4 wraps some 4xx bodies in a list
        data = data[0]
    message = data.get("error") if isinstance(data, dict) else str(data)
    details: dict[str, Any] = {}
    if isinstance(data, dict) and "detail" in data:
        details["errors"] = data["detail"]
    if status >= 500:
        message = "unexpected server error; see the service log"
        details = {}
    return json.dumps({"error": {"code": CODES.get(status, "error"), "message": str(message or "request failed"),
                                 "details": details}}).encode()


class ErrorShapeMiddleware:
    """Rewrites error responses (status >= 400) that are not already in the shared JSON error shape."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def wrapped_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)
                    return
                start.update(message)
                return
            if not start or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if not _ours(body):
                body = _reshape(start["status"], body)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if start["status"] == 503 and not any(k.lower() == RETRY_AFTER[0] for k, _ in headers):
                headers.append(RETRY_AFTER)
            await send({"type": "http.response.start", "status": start["status"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, wrapped_send)


class MultipartFieldGuard:
    """Refuses multipart fields an API does not take (400 naming the expected ones) before BentoML parses the form.

    BentoML 1.4 JSON-decodes every field that is not a declared file and lets the UnicodeDecodeError of a binary one
    escape as a 500 (``-F file=@digit.png`` instead of ``-F image=@...``). Only part headers are read; the body is
    replayed unchanged.
    """

    def __init__(self, app: Any, fields: dict[str, tuple[str, ...]]) -> None:
        self.app = app
        self.fields = fields

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        allowed = self.fields.get(scope.get("path", "")) if scope["type"] == "http" else None
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"") if allowed else b""
        if not allowed or not ctype.lower().startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        names = _part_names(body, ctype)
        unknown = sorted(set(names) - set(allowed))
        if unknown or allowed[0] not in names:
            what = (f"unknown multipart field(s) {', '.join(repr(u) for u in unknown)}" if unknown
                    else f"the multipart field '{allowed[0]}' is missing")
            exc = MlstackError(f"{what}; the image goes in the field '{allowed[0]}' (e.g. curl -F {allowed[0]}=@digit.png)",
                               code="invalid_request",
                               details={"field": allowed[0], "unknown": unknown, "expected": list(allowed)})
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


# Media types BentoML does not parse as a JSON object of the API's fields (everything else goes to its JSON serde).
_NOT_JSON = (b"multipart/form-data", b"application/vnd.bentoml+pickle")


class JsonFieldGuard:
    """Refuses top-level JSON fields an API does not take: 422 naming the first unknown one, the body unread by BentoML.

    BentoML's input models ignore unknown fields, so ``"methd": "lime"`` on explain would answer with SHAP and a misspelt
    ``"verison"`` with the live version. A body that is not a JSON object is left to BentoML's own validation.
    """

    def __init__(self, app: Any, fields: dict[str, frozenset[str]]) -> None:
        self.app = app
        self.fields = fields

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        allowed = self.fields.get(scope.get("path", "")) if scope["type"] == "http" else None
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"") if allowed is not None else b""
        if allowed is None or ctype.split(b";")[0].strip().lower() in _NOT_JSON:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        unknown = sorted(set(doc) - allowed) if isinstance(doc, dict) else []
        if unknown:
            listed = ", ".join(repr(u[:64]) for u in unknown[:10])
            exc = MlstackError(f"unknown field(s) {listed}; this API takes: {', '.join(sorted(allowed)) or 'no fields'}",
                               code="invalid_request",
                               details={"field": unknown[0][:64], "unknown": [u[:64] for u in unknown[:10]],
                                        "expected": sorted(allowed)})
            exc.status = 422
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return dict(await receive())
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


_NAME = re.compile(rb'content-disposition:[^\r\n]*?\bname="([^"]*)"', re.IGNORECASE)


def _part_names(body: bytes, ctype: bytes) -> list[str]:
    m = re.search(rb'boundary="?([^";]+)"?', ctype)
    if not m:
        return []
    names = []
    for part in body.split(b"--" + m.group(1))[1:]:
        head = part.split(b"\r\n\r\n", 1)[0]
        found = _NAME.search(head)
        if found:
            names.append(found.group(1).decode("utf-8", "replace")[:64])
    return names
