"""The gateway's HTTP protocol (uvicorn's httptools with coalesced writes) on a real uvicorn server: a response leaves
in one write (a client's first read holds all of it), keep-alive and pipelined requests, large streamed bodies,
``Connection: close`` and WebSocket upgrades all still work."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
import uvloop

from auth_api.http_protocol import CoalescingHttpToolsProtocol

BIG = os.urandom(3 * 1024 * 1024 + 17)


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        msg = await receive()
        await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
        await send({"type": "websocket.close", "code": 1000})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/big":  # streamed in 64 KiB chunks, no content-length
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(0, len(BIG), 65536):
            await send({"type": "http.response.body", "body": BIG[i:i + 65536], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"path":"' + scope["path"].encode() + b'"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", http=CoalescingHttpToolsProtocol)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: uvloop.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(10)


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def _read_response(conn: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, rest) of one Content-Length response."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed mid-response: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk
        rest += chunk
    return head, rest[:length], rest[length:]


def test_a_response_arrives_in_one_write(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(50):
            conn.sendall(_request(f"/r{i}"))
            first = conn.recv(65536)  # wakes on the first segment: with two writes it would hold the headers alone
            head, body, rest = _read_response(conn, first)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b'{"path":"/r%d"}' % i
            assert len(first) == len(head) + 4 + len(body), f"response {i} came in pieces: first read {first!r}"
            assert rest == b""


def test_keep_alive_and_pipelined_requests(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.sendall(b"".join(_request(f"/p{i}") for i in range(5)))
        rest = b""
        for i in range(5):
            _, body, rest = _read_response(conn, rest)
            assert body == b'{"path":"/p%d"}' % i


def test_a_large_streamed_body_arrives_whole(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.sendall(_request("/big", "Connection: close\r\n"))
        data = b""
        while chunk := conn.recv(1 << 20):
            data += chunk
    head, chunked = data.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    body, pos = b"", 0
    while True:
        end = chunked.index(b"\r\n", pos)
        size = int(chunked[pos:end], 16)
        if size == 0:
            break
        body += chunked[end + 2:end + 2 + size]
        pos = end + 2 + size + 2
    assert body == BIG


def test_connection_close_flushes_before_closing(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.sendall(_request("/last", "Connection: close\r\n"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.endswith(b'{"path":"/last"}'), data


def test_websocket_upgrade_still_works(server: int) -> None:
    async def talk() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", server)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        payload, mask = b"hello", os.urandom(4)
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        frame = await reader.readexactly(2)
        text = (await reader.readexactly(frame[1] & 0x7F)).decode()
        writer.close()
        return text

    assert asyncio.run(asyncio.wait_for(talk(), 10)) == "echo:hello"
