"""The hot path's HTTP/1.1 client against a small real HTTP server: keep-alive reuse, a server that closed an idle
connection, chunked answers, the connection limit, timeouts and refused connections (503/504, never a hang)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from auth_api.core.errors import UpstreamTimeout, UpstreamUnavailable
from auth_api.proxy.rawhttp import RawPool

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # (request body, writer) -> keep the connection open


class Server:
    """Counts connections and the most open at once; ``handler`` answers each request."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                if not await self.handler(body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@asynccontextmanager
async def running(handler: Handler) -> AsyncIterator[tuple[Server, str]]:
    srv = Server(handler)
    server = await asyncio.start_server(srv.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for w in srv.writers:
            w.close()


async def echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    return True


async def test_keep_alive_connections_are_reused_and_answers_are_intact() -> None:
    async with running(echo) as (srv, url):
        pool = RawPool(url, limit=8, connect_timeout_s=1, timeout_s=5)
        ctype = [(b"content-type", b"application/json")]
        for i in range(20):
            status, headers, body, elapsed = await pool.post("/v2/models/m/infer", b'{"i": %d}' % i, ctype)
            assert status == 200 and body == b'{"i": %d}' % i and (b"content-type", b"application/json") in headers and elapsed > 0
        assert srv.connections == 1
        pool.close()


async def test_an_idle_connection_closed_by_the_server_is_replaced_transparently() -> None:
    async def once(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await echo(body, writer)
        await asyncio.sleep(0.02)
        return False  # answer, then close the keep-alive connection without reading what came in meanwhile

    async with running(once) as (srv, url):
        pool = RawPool(url, limit=8, connect_timeout_s=1, timeout_s=5)
        for i in range(6):
            await asyncio.sleep(0.05 if i % 2 else 0)  # let the close arrive, or send into it (then resent): both work
            status, _, body, _ = await pool.post("/x", b"abc", [])
            assert status == 200 and body == b"abc"
        assert srv.connections == 6
        pool.close()
        await asyncio.sleep(0.05)  # the server's last handler finishes its close


async def test_chunked_answers_and_the_connection_limit() -> None:
    async def chunked(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with running(chunked) as (srv, url):
        pool = RawPool(url, limit=2, connect_timeout_s=1, timeout_s=5)
        answers = await asyncio.gather(*(pool.post("/x", b"", []) for _ in range(10)))
        assert all(a[0] == 404 and a[2] == b"abcde" for a in answers)
        assert srv.max_open <= 2
        pool.close()


async def test_a_server_that_never_answers_is_a_timeout_not_a_hang() -> None:
    async def silent(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async with running(silent) as (_, url):
        pool = RawPool(url, limit=2, connect_timeout_s=1, timeout_s=0.3)
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout):
            await pool.post("/x", b"{}", [])
        assert time.perf_counter() - start < 2
        pool.close()


async def test_nobody_listening_is_a_fast_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    pool = RawPool(f"http://127.0.0.1:{port}", limit=2, connect_timeout_s=1, timeout_s=5)
    start = time.perf_counter()
    with pytest.raises(UpstreamUnavailable) as exc:
        await pool.post("/x", b"{}", [])
    assert time.perf_counter() - start < 2 and exc.value.status == 503
