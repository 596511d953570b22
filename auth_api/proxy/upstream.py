"""Pooled async HTTP clients to Triton (one replica or several), created once per app; connection failures become a fast
503, or a second try on another replica when the first one answered nothing.

v2 infer (the hot path) goes through ``RawPool`` (``rawhttp``); everything else through one aiohttp session.

aiohttp, not httpx: measured on this box against Triton at 64 concurrent, httpx's pool gave ~280 requests/s and
aiohttp ~9,000 (single requests: 1.0 ms vs 0.3 ms), and the gateway's throughput is bounded by this client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from auth_api.core.errors import UpstreamTimeout, UpstreamUnavailable
from auth_api.proxy.rawhttp import RawPool
from auth_api.proxy.replicas import Replica, ReplicaSet
from mlstack.errors import ModelNotFound
from mlstack.repository.layout import NAME_RE
from mlstack.settings import Settings

# Request compression is forwarded as is (Triton decompresses); responses are asked for uncompressed, so the bytes
# the client gets are exactly Triton's (compressing on the loopback hop costs more than it saves).
FORWARD_REQUEST_HEADERS = ("content-type", "inference-header-content-length", "content-encoding")
FORWARD_RESPONSE_HEADERS = ("content-type", "inference-header-content-length")
_RAW_REQUEST_HEADERS = tuple(h.encode() for h in FORWARD_REQUEST_HEADERS)
_RAW_RESPONSE_HEADERS = frozenset(h.encode() for h in FORWARD_RESPONSE_HEADERS)


def model_path(name: str, version: str | None) -> str:
    """Triton's path for a model (version), ModelNotFound for names no model can have."""
    if not NAME_RE.fullmatch(name):
        raise ModelNotFound(name)
    if version is not None and not (version.isdigit() and not version.startswith("0")):
        raise ModelNotFound(name, version)
    return f"/v2/models/{name}/versions/{version}" if version else f"/v2/models/{name}"


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    content: bytes
    elapsed_s: float


@dataclass
class RawResponse:
    """An upstream answer ready for ASGI: headers as (name, value) bytes pairs, content-length included."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes
    header_length: bytes | None  # inference-header-content-length (binary-tensor extension)
    elapsed_s: float


class Upstream:
    """Forwards bytes to Triton's HTTP endpoint(s); never re-encodes bodies. ``start()`` inside the event loop.

    With several replicas (``MLSTACK_TRITON_URLS``) each infer call goes to the ready one with the fewest calls in
    flight, and a call refused or reset before any byte of an answer is sent once more to another replica; other
    calls (metadata, registry, health) go to any ready replica, the next one when a replica does not answer.
    """

    def __init__(self, settings: Settings):
        self.urls = settings.triton_http_urls
        self.base_url = self.urls[0]
        self.pool_size = settings.gateway_upstream_pool_size
        self.timeout = aiohttp.ClientTimeout(total=settings.gateway_upstream_timeout_s,
                                             sock_connect=settings.gateway_upstream_connect_timeout_s)
        self.health_interval_s = settings.gateway_upstream_health_interval_s
        self.replicas: ReplicaSet | None = None

    async def start(self) -> None:
        connect_s, total_s = self.timeout.sock_connect or 1.0, self.timeout.total or 30.0
        replicas = []
        for url in self.urls:
            connector = aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=30, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                url, connector=connector, timeout=self.timeout, auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
            replicas.append(Replica(url, RawPool(url, self.pool_size, connect_s, total_s), session))
        self.replicas = ReplicaSet(replicas, self.health_interval_s, min(self.health_interval_s, connect_s) + 0.5)
        self.replicas.start()

    def _replicas(self) -> ReplicaSet:
        if self.replicas is None:
            raise UpstreamUnavailable("gateway upstream client not started")
        return self.replicas

    async def request(self, method: str, path: str, content: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float | None = None) -> UpstreamResponse:
        replicas = self._replicas()
        replica = replicas.pick()
        assert replica is not None
        try:
            return await self._request(replica, method, path, content, headers, timeout)
        except UpstreamUnavailable as exc:
            other = replicas.pick(exclude=replica)
            if other is None:
                raise
            replica.mark(False, str(exc.details.get("reason", "unreachable")))
            return await self._request(other, method, path, content, headers, timeout)

    async def _request(self, replica: Replica, method: str, path: str, content: bytes | None,
                       headers: dict[str, str] | None, timeout: float | None) -> UpstreamResponse:
        start = time.perf_counter()
        kw = {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=self.timeout.sock_connect)} if timeout else {}
        try:
            async with replica.session.request(method, path, data=content, headers=headers, **kw) as resp:  # type: ignore[arg-type]
                body = await resp.read()
                out = {k: v for k in FORWARD_RESPONSE_HEADERS if (v := resp.headers.get(k)) is not None}
                return UpstreamResponse(resp.status, out, body, time.perf_counter() - start)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            raise UpstreamUnavailable("inference server unavailable", details={"upstream": replica.url,
                                                                               "reason": type(exc).__name__}) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("inference server timed out", details={"upstream": replica.url}) from exc

    async def post_raw(self, path: str, body: bytes, headers: dict[bytes, bytes]) -> RawResponse:
        """POST ``body`` to ``path`` with the forwardable ones of the client's ``headers`` (lower-case bytes names)."""
        replicas = self._replicas()
        fwd = [(k, v) for k in _RAW_REQUEST_HEADERS if (v := headers.get(k)) is not None]
        replica = replicas.pick()
        assert replica is not None
        try:
            status, resp_headers, content, elapsed = await self._post(replica, path, body, fwd)
        except UpstreamUnavailable as exc:
            other = replicas.pick(exclude=replica) if exc.unanswered else None
            if other is None:
                raise
            replica.mark(False, str(exc.details.get("reason", "refused")))
            replica.retried_away += 1
            status, resp_headers, content, elapsed = await self._post(other, path, body, fwd)
        out = [(b"content-length", str(len(content)).encode())]
        hlen = None
        for k, v in resp_headers:
            if k in _RAW_RESPONSE_HEADERS:
                out.append((k, v))
                if k == b"inference-header-content-length":
                    hlen = v
        return RawResponse(status, out, content, hlen, elapsed)

    @staticmethod
    async def _post(replica: Replica, path: str, body: bytes,
                    fwd: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes, float]:
        replica.outstanding += 1
        replica.requests += 1
        try:
            return await replica.raw.post(path, body, fwd)
        except UpstreamUnavailable:
            replica.failures += 1
            raise
        finally:
            replica.outstanding -= 1

    def describe(self) -> list[dict[str, object]]:
        """Each replica's state (for /health/ready)."""
        return self.replicas.describe() if self.replicas is not None else [{"url": u, "ready": False} for u in self.urls]

    async def aclose(self) -> None:
        if self.replicas is None:
            return
        await self.replicas.stop()
        for r in self.replicas:
            r.raw.close()
            await r.session.close()
        self.replicas = None
