"""One pooled async HTTP client to the BentoML task service, created once per app; a dead service is a fast 503."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp

from auth_api.core.errors import UpstreamTimeout, UpstreamUnavailable
from auth_api.proxy.upstream import UpstreamResponse
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

EXTRAS_KEY = "bento"
# Shorter than the service's own keep-alive (uvicorn's 5 s), so a pooled connection is not reused as the server
# closes it; a request that still races a close is sent once more (task calls have no side effects).
KEEPALIVE_S = 3.0


class BentoClient:
    """Forwards task calls (bytes in, bytes out) to ``http://{bento_host}:{bento_port}``. ``start()`` inside the loop."""

    def __init__(self, settings: Settings):
        self.base_url = f"http://{settings.bento_host}:{settings.bento_port}"
        self.timeout = aiohttp.ClientTimeout(total=settings.gateway_bento_timeout_s,
                                             sock_connect=settings.gateway_upstream_connect_timeout_s)
        self.pool_size = settings.gateway_upstream_pool_size
        self.session: aiohttp.ClientSession | None = None
        self.retries = 0  # calls sent a second time after a transport failure (logged; read by tests)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=KEEPALIVE_S)
        self.session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=self.timeout,
                                             skip_auto_headers=("User-Agent",))

    async def post(self, api: str, content: bytes, content_type: str | None) -> UpstreamResponse:
        """POST ``content`` to ``/{api}``; returns the service's status, content type and body unchanged."""
        if self.session is None:
            raise UpstreamUnavailable("gateway task-service client not started")
        headers = {"content-type": content_type} if content_type else {}
        start = time.perf_counter()
        for attempt in (1, 2):
            try:
                async with self.session.post(f"/{api}", data=content, headers=headers) as resp:
                    body = await resp.read()
                    out = {k: v for k in ("content-type", "retry-after") if (v := resp.headers.get(k))}
                    return UpstreamResponse(resp.status, out, body, time.perf_counter() - start)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                # Read timeouts (explain can legitimately take long) are not retried; a connect timeout is.
                if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
                    raise UpstreamTimeout("task service timed out", details={"upstream": self.base_url}) from exc
                # A pooled connection closed under us, a reset, or a refused connect while the service restarts:
                # task calls have no side effects, so send it once more; a second failure is a 503, never a 500.
                if attempt == 1:
                    self.retries += 1
                    logger.info("task service connection failed (%s); sending %s again", type(exc).__name__, api)
                    continue
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: Exception) -> UpstreamUnavailable:
        return UpstreamUnavailable("task service unavailable", details={"upstream": self.base_url, "reason": type(exc).__name__})

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


async def open_client(settings: Settings, extras: dict[str, Any]) -> BentoClient:
    """Create, start and register the client in the gateway's ``extras`` (closed by ``close_client``)."""
    client = BentoClient(settings)
    await client.start()
    extras[EXTRAS_KEY] = client
    return client


async def close_client(extras: dict[str, Any]) -> None:
    client = extras.pop(EXTRAS_KEY, None)
    if client is not None:
        await client.aclose()


def get_client(extras: dict[str, Any]) -> BentoClient:
    """The app's client (opened in the lifespan)."""
    client = extras.get(EXTRAS_KEY)
    if not isinstance(client, BentoClient):
        raise UpstreamUnavailable("the gateway has no task-service client (not started)")
    return client
