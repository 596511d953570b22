"""Per-principal token-bucket rate limits and a request body size limit (pure ASGI, no per-request copies)."""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_api.core.errors import RateLimited


class TokenBuckets:
    """One bucket per principal key ("u:<id>", "k:<id>", "ip:<addr>"); LRU-bounded so memory stays flat."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> None:
        """Consume one token or raise RateLimited with the seconds until one is available."""
        if not self.enabled:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class BodySizeLimit:
    """413 when Content-Length (or the streamed byte count) exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send, scope["path"])
                    return
                break
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, scope["path"])

    async def _reject(self, send: Send, path: str) -> None:
        message = body_too_large_message(self.max_bytes)
        # KServe v2 clients (stock tritonclient) need "error" to be the message string on /v2 routes.
        error = ({"error": message, "code": "body_too_large"} if path.startswith("/v2/") else
                 {"error": {"code": "body_too_large", "message": message, "details": {"max_bytes": self.max_bytes}}})
        body = json.dumps(error).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def body_too_large_message(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` so FastAPI re-raises it (it wraps other body errors in a 400) and the handler maps it."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")
