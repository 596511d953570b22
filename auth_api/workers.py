"""What a gateway process knows about its siblings when ``auth_api.serve`` runs N of them on one port.

The supervisor gives each worker its index, the worker count and a per-start directory (``var/gateway-workers/<pid>``)
through the environment. Each worker answers its Prometheus exposition on a Unix socket there; ``/metrics`` on any
worker reads every sibling's socket and merges the texts with a ``worker`` label, so one scrape sees all workers.
A second socket per worker takes control requests (one JSON line in, one out) that must reach every worker, such as
flushing a model's in-process prediction cache (``ask_siblings``).
A single process (no supervisor) has none of this: its exposition is its own registry, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

ENV_INDEX = "MLSTACK_GATEWAY_WORKER_INDEX"
ENV_COUNT = "MLSTACK_GATEWAY_WORKER_COUNT"
ENV_DIR = "MLSTACK_GATEWAY_WORKER_DIR"
SIBLING_TIMEOUT_S = 0.5
CONTROL_TIMEOUT_S = 2.0  # a sibling's control answer (a flush of its in-process cache takes milliseconds)
CONTROL_MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    count: int
    directory: Path

    def socket_path(self, index: int | None = None) -> Path:
        return self.directory / f"metrics-{self.index if index is None else index}.sock"

    def control_path(self, index: int | None = None) -> Path:
        return self.directory / f"control-{self.index if index is None else index}.sock"  # as long as metrics-N.sock


# Linux caps a Unix socket path at 107 bytes; "metrics-NN.sock" must fit after the directory.
MAX_SOCKET_DIR = 107 - len("/metrics-00.sock")


def socket_directory(var_dir: Path, supervisor_pid: int) -> Path:
    """Where the workers of one supervisor keep their sockets: under ``var_dir`` when the path is short enough, else a
    private folder in the system's temp directory (a deep ``var_dir`` must not stop the gateway from starting)."""
    preferred = var_dir.absolute() / "gateway-workers" / str(supervisor_pid)
    if len(os.fsencode(preferred)) <= MAX_SOCKET_DIR:
        return preferred
    return Path(tempfile.gettempdir()) / f"mlstack-gw-{os.getuid()}-{supervisor_pid}"


def current() -> WorkerInfo | None:
    """This process's place among the workers, or None when it serves alone."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return None
    return WorkerInfo(int(os.environ.get(ENV_INDEX, "0")), int(os.environ.get(ENV_COUNT, "1")), Path(directory))


def worker_count() -> int:
    """How many processes share this gateway's port (1 without the supervisor)."""
    info = current()
    return info.count if info is not None else 1


STARTED_WAIT_S = 120.0


def started_marker(directory: Path, index: int) -> Path:
    return directory / f"started-{index}"


async def started_together(info: WorkerInfo) -> None:
    """Mark this worker started, then wait (bounded) for the others; a restarted worker finds them all started."""
    started_marker(info.directory, info.index).touch()
    deadline = asyncio.get_running_loop().time() + STARTED_WAIT_S
    while not all(started_marker(info.directory, i).exists() for i in range(info.count)):
        if asyncio.get_running_loop().time() > deadline:
            logger.warning("gateway worker %d: not every sibling started within %.0f s; serving anyway", info.index,
                           STARTED_WAIT_S)
            return
        await asyncio.sleep(0.05)


async def serve_exposition(info: WorkerInfo, registry: CollectorRegistry) -> asyncio.AbstractServer:
    """Answer every connection to this worker's socket with its exposition text, then close it."""
    path = info.socket_path()
    path.unlink(missing_ok=True)  # left by this index's previous (killed) process

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(own_exposition(info, registry))
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=str(path))


def own_exposition(info: WorkerInfo, registry: CollectorRegistry) -> bytes:
    pid = (f"# HELP gateway_worker_pid Process id of each gateway worker.\n# TYPE gateway_worker_pid gauge\n"
           f"gateway_worker_pid {os.getpid()}\n").encode()
    return generate_latest(registry) + pid


ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_control(info: WorkerInfo, handlers: Mapping[str, ControlHandler]) -> asyncio.AbstractServer:
    """Answer each request line ``{"op": ..., ...}`` on this worker's control socket with its handler's JSON answer
    (``{"error": ...}`` for an unknown op or a failed handler). The folder is the owner's alone (0700)."""
    path = info.control_path()
    path.unlink(missing_ok=True)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = json.loads(await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S))
                handler = handlers.get(str(request.get("op"))) if isinstance(request, dict) else None
                reply = await handler(request) if handler is not None else {"error": "unknown_op"}
            except Exception as exc:  # a bad line or a failed handler: the asking worker counts no answer
                logger.warning("gateway worker %d: control request failed (%s)", info.index, type(exc).__name__)
                reply = {"error": type(exc).__name__}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=str(path), limit=CONTROL_MAX_LINE)


async def _ask(path: Path, line: bytes) -> dict[str, Any] | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=CONTROL_MAX_LINE),
                                                CONTROL_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None  # a worker being (re)started
    try:
        writer.write(line)
        await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S))
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()
    return reply if isinstance(reply, dict) and "error" not in reply else None


async def ask_siblings(info: WorkerInfo, request: dict[str, Any]) -> dict[int, dict[str, Any] | None]:
    """Every other worker's answer to ``request`` (None where a worker did not answer), asked at once."""
    others = [i for i in range(info.count) if i != info.index]
    line = json.dumps(request).encode() + b"\n"
    answers = await asyncio.gather(*(_ask(info.control_path(i), line) for i in others))
    return dict(zip(others, answers, strict=True))


async def _sibling(path: Path) -> bytes | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), SIBLING_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None  # a worker being restarted: the next scrape sees it again
    try:
        return await asyncio.wait_for(reader.read(), SIBLING_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


async def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text for a scrape: this registry alone, or every worker's merged under a ``worker`` label."""
    info = current()
    if info is None:
        return generate_latest(registry)
    texts: dict[int, bytes | None] = {info.index: own_exposition(info, registry)}
    others = [i for i in range(info.count) if i != info.index]
    for i, text in zip(others, await asyncio.gather(*(_sibling(info.socket_path(i)) for i in others)), strict=True):
        texts[i] = text
    return merge({i: t for i, t in sorted(texts.items()) if t is not None})


def merge(texts: dict[int, bytes]) -> bytes:
    """Families of every worker's text, each family's samples together (the text format wants one group per name)."""
    headers: dict[str, list[bytes]] = {}
    samples: dict[str, list[bytes]] = {}
    for index, text in texts.items():
        label = f'worker="{index}"'.encode()
        family = ""
        for line in text.splitlines():
            if line.startswith(b"# HELP "):
                family = line.split(b" ", 3)[2].decode()
                if family not in headers:
                    headers[family] = [line]
                    samples[family] = []
                continue
            if line.startswith(b"#"):
                if len(headers.get(family, ())) == 1:
                    headers[family].append(line)
                continue
            if not line or not family:
                continue
            samples[family].append(_labelled(line, label))
    out = []
    for family, head in headers.items():
        out.extend(head)
        out.extend(samples[family])
    return b"\n".join(out) + b"\n"


def _labelled(line: bytes, label: bytes) -> bytes:
    brace, space = line.find(b"{"), line.find(b" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = line[brace + 1:]
        return line[:brace + 1] + label + (b"," if not rest.startswith(b"}") else b"") + rest
    return line[:space] + b"{" + label + b"}" + line[space:]
