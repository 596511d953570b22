"""The gateway's own errors on ``/v2/...`` in the KServe v2 shape, ``{"error": "<message>"}``.

Stock ``tritonclient.http`` builds its exception from ``body["error"]`` as a string (an object there raises TypeError
in the client), so on the v2 routes the message is the value of ``error``; the machine-readable code rides beside it
(``"code"``), which clients that only know the protocol ignore. ``/api/v1/...`` keeps ``{"error": {"code", ...}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from auth_api.core.errors import RateLimited
from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)


def v2_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def v2_error_response(exc: Exception, where: str) -> JSONResponse:
    """The v2-shaped answer for any exception raised while serving ``where`` (a method and path, for the log)."""
    if isinstance(exc, RateLimited):
        return v2_error(exc.status, exc.code, exc.message, {"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))})
    if isinstance(exc, MlstackError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 413:  # the rest of the body may still be on the wire
            headers = {"Connection": "close"}
        return v2_error(exc.status, exc.code, exc.message, headers)
    if isinstance(exc, RequestValidationError):
        first: dict[str, Any] = next(iter(exc.errors()), {})
        where_ = ".".join(str(p) for p in first.get("loc", ()))
        return v2_error(422, "invalid_request", f"invalid request: {where_}: {first.get('msg', '')}"[:300])
    if isinstance(exc, StarletteHTTPException):
        return v2_error(exc.status_code, "body_too_large" if exc.status_code == 413 else "http_error", str(exc.detail),
                        getattr(exc, "headers", None))
    logger.error("unhandled error on %s", where, exc_info=exc)
    return v2_error(500, "internal_error", "internal server error")


class V2Route(APIRoute):
    """A route whose errors, those of its dependencies (authentication, rate limit) included, use the v2 shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every failure of a v2 route becomes a v2 error body
                return v2_error_response(exc, f"{request.method} {request.url.path}")

        return handle
