"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes the status line and headers on ``http.response.start`` and the body on ``http.response.body``: two
``write`` calls, and with TCP_NODELAY two TCP segments, each one a trip through the kernel's loopback/TCP path. A
py-spy profile of a gateway worker under wrk (c=64, single-row v2 infer, docs/benchmarks.md) put ~30 % of its CPU on
those two lines. Here the writes made during one event-loop turn are joined and go out as one write at the end of the
turn (``call_soon``), so a response costs one syscall and one segment; a write that fills the buffer past
``FLUSH_BYTES`` goes out at once (large and streamed bodies keep uvicorn's flow control). A WebSocket upgrade hands the
real transport to the WebSocket protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_BYTES = 64 * 1024


class CoalescingTransport:
    """Wraps a transport: ``write`` appends to a buffer flushed once per loop turn; everything else is delegated."""

    __slots__ = ("_buf", "_loop", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self._loop = loop
        self._buf: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._buf.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif len(self._buf) == 1:
            self._loop.call_soon(self.flush)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        self._buf, self._size = [], 0
        if not self.transport.is_closing():
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self._buf, self._size = [], 0
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self.transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a ``CoalescingTransport`` (pass the class as uvicorn's ``http``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        wrapped = self.transport
        if isinstance(wrapped, CoalescingTransport):
            wrapped.flush()
            self.transport = wrapped.transport
        super().handle_websocket_upgrade()
