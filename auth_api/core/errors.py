"""Gateway domain errors and the one exception handler that turns every failure into ``{"error": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)


class Unauthorized(MlstackError):
    code = "unauthorized"
    status = 401


class Forbidden(MlstackError):
    code = "forbidden"
    status = 403


class NotFound(MlstackError):
    code = "not_found"
    status = 404


class Conflict(MlstackError):
    code = "conflict"
    status = 409


class InvalidInput(MlstackError):
    code = "invalid_input"
    status = 422


class RateLimited(MlstackError):
    code = "rate_limited"
    status = 429

    def __init__(self, retry_after_s: float):
        super().__init__("rate limit exceeded; retry later", details={"retry_after_s": round(retry_after_s, 3)})
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(MlstackError):
    code = "upstream_unavailable"
    status = 503
    # True when the upstream refused the connection or dropped it before any byte of an answer: the call can be sent
    # to another replica (inference is idempotent).
    unanswered = False


class UpstreamRefused(UpstreamUnavailable):
    """The upstream refused or reset the call before answering anything."""

    unanswered = True


class UpstreamTimeout(MlstackError):
    code = "upstream_timeout"
    status = 504


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "body_too_large", 415: "unsupported_media_type", 429: "rate_limited"}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details or {}}},
                        status_code=status, headers=headers)


def _json_safe(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


async def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlstackError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))}
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", "the request does not match the expected schema",
                          {"errors": _json_safe(list(exc.errors()))})


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_handlers(app: FastAPI) -> None:
    """Map every failure kind once; clients never see a stack trace."""
    app.add_exception_handler(MlstackError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
