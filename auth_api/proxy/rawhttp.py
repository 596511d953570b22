"""A minimal pooled HTTP/1.1 POST client (asyncio protocol + httptools parser) for the v2 infer hot path.

Why not aiohttp here: profiled at 64 concurrent single-row requests, aiohttp's request machinery (ClientRequest,
payload registry, timers, connector bookkeeping) was ~half of the gateway's CPU per request. This client does one
``transport.write`` per request and parses the answer with the same C parser uvicorn uses. It only knows what the hot
path needs: POST with a body, keep-alive connections to one host, a total timeout, Content-Length or chunked answers.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import cast
from urllib.parse import urlsplit

import httptools

from auth_api.core.errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable

_COALESCE_BYTES = 256 * 1024


class _Disconnected(Exception):
    """The connection closed (or sent garbage) before a whole response arrived."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.got_bytes = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Disconnected(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(_Disconnected("server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # client side
    def start(self, data: list[bytes]) -> asyncio.Future[None]:
        self.status, self.headers, self.body, self.got_bytes = 0, [], [], False
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        if len(data) == 1:
            self.transport.write(data[0])
        else:
            self.transport.writelines(data)
        return self.waiter

    def time_out(self) -> None:
        self._fail(TimeoutError())

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawPool:
    """Keep-alive connections to ``base_url`` (http only), at most ``limit`` open at once."""

    def __init__(self, base_url: str, limit: int, connect_timeout_s: float, timeout_s: float):
        self.base_url = base_url
        u = urlsplit(base_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.connect_timeout_s, self.timeout_s = connect_timeout_s, timeout_s
        self._idle: collections.deque[_Conn] = collections.deque()
        self.limit = limit
        self._busy = 0  # requests holding a connection; an int and a deque cost less than asyncio.Semaphore here
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def post(self, path: str, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes, float]:
        """(status, lower-cased response headers, body, elapsed seconds) of one POST."""
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\nContent-Length: ",
                str(len(body)).encode()]
        for k, v in headers:
            head += (b"\r\n", k, b": ", v)
        head.append(b"\r\n\r\n")
        if len(body) <= _COALESCE_BYTES:  # one write, one segment: writelines() sends the parts one syscall each
            head.append(body)
            data = [b"".join(head)]
        else:
            data = [b"".join(head), body]
        upstream = self.base_url
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        if self._busy >= self.limit:
            await self._wait_for_room(loop)
        self._busy += 1
        try:
            for attempt in (0, 1):
                conn, reused = await self._acquire(upstream)
                waiter = conn.start(data)
                timer = loop.call_later(self.timeout_s, conn.time_out)
                try:
                    await waiter
                except _Disconnected as exc:
                    conn.close()
                    # A keep-alive connection the server had already closed: nothing was answered, send once more.
                    if reused and not conn.got_bytes and attempt == 0:
                        continue
                    kind = UpstreamUnavailable if conn.got_bytes else UpstreamRefused
                    raise kind("inference server unavailable",
                               details={"upstream": upstream, "reason": "ServerDisconnected"}) from exc
                except TimeoutError as exc:
                    conn.close()
                    raise UpstreamTimeout("inference server timed out", details={"upstream": upstream}) from exc
                except BaseException:
                    conn.close()
                    raise
                finally:
                    timer.cancel()
                answer = conn.status, conn.headers, b"".join(conn.body), time.perf_counter() - start
                if conn.keep_alive and not conn.closed:
                    self._idle.append(conn)
                else:
                    conn.close()
                return answer
        finally:
            self._busy -= 1
            self._wake_one()
        raise AssertionError("unreachable")

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._busy >= self.limit:
            w: asyncio.Future[None] = loop.create_future()
            self._waiters.append(w)
            try:
                await w
            except BaseException:
                if w.done() and not w.cancelled() and self._busy < self.limit:
                    self._wake_one()  # pass the wake-up on
                raise

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def _acquire(self, upstream: str) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port), self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise UpstreamRefused("inference server unavailable",
                                      details={"upstream": upstream, "reason": type(exc).__name__}) from exc
        return conn, False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
