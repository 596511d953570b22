"""Per-principal token-bucket rate limits and a request body size limit (pure ASGI, no per-request copies).

With N gateway workers a limit must hold for the workers together: through Redis when ``MLSTACK_REDIS_URL`` is set (one
Lua token bucket per principal, one round trip per request), else each worker enforces limit/N (connections spread
evenly over the workers, so a client's total stays near the limit). Redis unreachable: the local share, never a failed
request; readiness says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_api.core.errors import RateLimited

logger = logging.getLogger(__name__)


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

    backend = "local"

    async def take(self, key: str) -> None:
        """Consume one token or raise RateLimited with the seconds until one is available."""
        self.take_local(key)

    async def close(self) -> None:
        """Nothing to release locally."""

    def take_local(self, key: str) -> None:
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


# KEYS[1]: the bucket; ARGV: rate/s, burst. Redis's clock, so every worker ages the bucket alike. Returns
# {1} or {0, "<seconds until a token>"} (a Lua number would be truncated to an integer in the reply).
TOKEN_BUCKET_LUA = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local ok = 0
if tokens >= 1 then tokens, ok = tokens - 1, 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 1) * 1000))
if ok == 1 then return {1} end
return {0, tostring((1 - tokens) / rate)}
"""
REDIS_RETRY_S = 1.0


class RedisBuckets(TokenBuckets):
    """The buckets in Redis, shared by every gateway process; the local share (limit/N) while Redis is unreachable."""

    backend = "redis"

    def __init__(self, url: str, rate_per_s: float, burst: int, workers: int, prefix: str = "mlstack:rl:"):
        super().__init__(rate_per_s / workers, max(1, burst // workers))
        import redis.asyncio as aioredis  # only when configured

        self.shared_rate, self.shared_burst, self.prefix = rate_per_s, burst, prefix
        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self._script = self.client.register_script(TOKEN_BUCKET_LUA)
        self._down_until = 0.0
        self.last_error: str | None = None

    @property
    def shared(self) -> bool:
        """Whether the last decision came from Redis (False: this worker's local share)."""
        return self.last_error is None

    async def take(self, key: str) -> None:
        if not self.enabled:
            return
        if self._down_until and time.monotonic() < self._down_until:
            self.take_local(key)
            return
        try:
            reply = await self._script(keys=[self.prefix + key], args=[self.shared_rate, self.shared_burst])
        except Exception as exc:
            if self.last_error is None:
                logger.warning("rate limits: Redis unreachable (%s); each worker enforces its share until it is back",
                               type(exc).__name__)
            self.last_error = type(exc).__name__
            self._down_until = time.monotonic() + REDIS_RETRY_S
            self.take_local(key)
            return
        if self.last_error is not None:
            logger.info("rate limits: shared through Redis again")
            self.last_error, self._down_until = None, 0.0
        if int(reply[0]) != 1:
            raise RateLimited(float(reply[1]))

    async def close(self) -> None:
        await self.client.aclose()


def open_buckets(rate_per_s: float, burst: int, redis_url: str | None, workers: int) -> TokenBuckets:
    """Shared buckets when Redis is configured and the limit is on; else this worker's share of the limit."""
    if redis_url and rate_per_s > 0:
        return RedisBuckets(redis_url, rate_per_s, burst, workers)
    return TokenBuckets(rate_per_s / workers, max(1, burst // workers))


class BodySizeLimit:
    """413 when Content-Length (or the streamed byte count) exceeds ``max_bytes`` (or the path's own cap in ``larger``)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}  # exact path -> its cap (dataset uploads take bigger bodies than anything else)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send, scope["path"], max_bytes)
                    return
                break
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > max_bytes:
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
                await self._reject(send, scope["path"], max_bytes)

    async def _reject(self, send: Send, path: str, max_bytes: int) -> None:
        message = body_too_large_message(max_bytes)
        # KServe v2 clients (stock tritonclient) need "error" to be the message string on /v2 routes.
        error = ({"error": message, "code": "body_too_large"} if path.startswith("/v2/") else
                 {"error": {"code": "body_too_large", "message": message, "details": {"max_bytes": max_bytes}}})
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
