"""The history journal: append-only files, one ``os.write`` per prediction, read back by ``auth_api.ingester``.

Each gateway process writes its own segments ``<writer>.<seq>.jnl`` under ``var/journal/`` and holds an flock on
``<writer>.lock`` for its lifetime, so a reader can tell a live writer from a dead one (the kernel drops the lock on
``kill -9``). A frame is ``<u32 length><u32 crc32>`` + a msgpack map; a short or mismatching last frame is a write
still in progress (or torn by a crash) and is skipped only once the segment is sealed: its writer rotated past it or died.
Nothing is fsynced per record: a record survives the process, not the machine (``gateway_journal_fsync_interval_s``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import uuid_utils

from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)
HEADER = struct.Struct("<II")
MAX_FRAME = 256 * 1024 * 1024  # a length beyond this is garbage, not a record
SEGMENT_RE = re.compile(r"(?P<writer>[\w-]+)\.(?P<seq>\d{8})\.jnl")


class JournalUnavailable(MlstackError):
    """The journal cannot be written (disk full, read-only): the prediction is not acknowledged."""

    code = "history_unavailable"
    status = 503


def new_prediction_id() -> str:
    """A UUIDv7: unique, and its first 48 bits are the minting time in ms (history lookups use that)."""
    return str(uuid_utils.uuid7())


def canonical_id(text: str) -> str:
    """``text`` as the lower-case, dashed form ids are stored in; ValueError if it is no UUID."""
    return str(uuid_utils.UUID(text))


def id_age_s(prediction_id: str, now_ms: float) -> float | None:
    """Seconds since ``prediction_id`` was minted, or None if it is not a UUIDv7."""
    try:
        u = uuid_utils.UUID(prediction_id)
    except ValueError:
        return None
    return (now_ms - u.timestamp) / 1000.0 if u.version == 7 else None


class JournalWriter:
    """One process's journal; ``append`` is safe from any thread (the event loop, gRPC, the threadpool)."""

    def __init__(self, directory: Path, *, segment_bytes: int, fsync_interval_s: float = 0.0, registry: Any = None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.writer_id = f"gw-{os.getpid()}-{uuid_utils.uuid7().hex[:16]}"
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        # The lock comes first: a reader that sees a segment can then trust the lock to say whether its writer lives.
        self._lock_fd = os.open(directory / f"{self.writer_id}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.seq = 0
        self.size = 0
        self._fd = -1
        self._open_segment()
        self.metrics = JournalMetrics(registry) if registry is not None else None
        self._dirty = False
        self._stop = threading.Event()
        self._fsync_thread: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._fsync_thread = threading.Thread(target=self._fsync_loop, args=(fsync_interval_s,), daemon=True,
                                                  name="journal-fsync")
            self._fsync_thread.start()

    @property
    def segment(self) -> str:
        return f"{self.writer_id}.{self.seq:08d}.jnl"

    def _open_segment(self) -> None:
        self.seq += 1
        self._fd = os.open(self.directory / self.segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        self.size = 0

    def append(self, record: dict[str, Any]) -> None:
        """Write one record with a single ``write``; when it returns, the record outlives this process."""
        payload = msgpack.packb(record, use_bin_type=True)
        frame = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            try:
                n = os.write(self._fd, frame)
                if n != len(frame):
                    # A short write (disk full) left a torn frame: seal this segment and write the whole record anew.
                    logger.error("short journal write (%d of %d bytes); rotating", n, len(frame))
                    self._rotate()
                    if os.write(self._fd, frame) != len(frame):
                        raise OSError("short write")
                self.size += len(frame)
                self._dirty = True
                if self.size >= self.segment_bytes:
                    self._rotate()
            except OSError as exc:
                logger.error("history journal write failed: %s", exc)
                raise JournalUnavailable("the prediction could not be recorded; try again later") from exc
        if self.metrics is not None:
            self.metrics.records.inc()
            self.metrics.bytes.inc(len(frame))

    def _rotate(self) -> None:
        old = self._fd
        self._open_segment()  # the new segment exists before the old fd closes: the reader then sees the old one sealed
        os.close(old)

    def position(self) -> tuple[str, int]:
        """(segment, end offset) of everything appended so far."""
        with self._lock:
            return self.segment, self.size

    def _fsync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                fd, dirty, self._dirty = self._fd, self._dirty, False
            if dirty:
                with contextlib.suppress(OSError):  # rotated and closed meanwhile: the next round syncs the new one
                    os.fsync(fd)

    def close(self) -> None:
        """Close the segment and drop the lock (the segment is then sealed; the ingester deletes it once ingested)."""
        self._stop.set()
        with self._lock:
            if self._fd >= 0:
                if self._dirty and self._fsync_thread is not None:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


class JournalMetrics:
    def __init__(self, registry: Any):
        from prometheus_client import Counter

        self.records = Counter("gateway_journal_records_total", "History records appended to the journal.", registry=registry)
        self.bytes = Counter("gateway_journal_bytes_total", "Bytes appended to the history journal.", registry=registry)


# --- reading -------------------------------------------------------------------------------------------------------


@dataclass
class Segment:
    path: Path
    writer: str
    seq: int

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Chunk:
    records: list[dict[str, Any]]
    end: int  # offset just past the last whole record


def segments(directory: Path) -> dict[str, list[Segment]]:
    """Every writer's segments, oldest first."""
    out: dict[str, list[Segment]] = {}
    if not directory.is_dir():
        return out
    for p in directory.iterdir():
        m = SEGMENT_RE.fullmatch(p.name)
        if m:
            out.setdefault(m["writer"], []).append(Segment(p, m["writer"], int(m["seq"])))
    for segs in out.values():
        segs.sort(key=lambda s: s.seq)
    return out


def writer_alive(directory: Path, writer: str) -> bool:
    """Whether the process that writes ``writer``'s segments still holds its lock."""
    try:
        fd = os.open(directory / f"{writer}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def read(path: Path, offset: int, max_records: int, max_bytes: int = 1024 * 1024) -> Chunk:
    """Whole, intact records of ``path`` from ``offset``: at most ``max_records`` within ``max_bytes`` (a batch of small
    records, not the whole backlog: each call reads only what it returns), one at least if one is there."""
    records: list[dict[str, Any]] = []
    at = 0
    with open(path, "rb") as f:
        f.seek(offset)
        buf = f.read(max_bytes)
        while len(records) < max_records and len(buf) - at >= HEADER.size:
            length, crc = HEADER.unpack_from(buf, at)
            if length > MAX_FRAME:
                break
            end = at + HEADER.size + length
            if end > len(buf):
                if records:
                    break  # the next call starts with it
                buf += f.read(end - len(buf))
                if end > len(buf):
                    break  # not all of it written (yet)
            payload = buf[at + HEADER.size:end]
            if zlib.crc32(payload) != crc:
                break
            records.append(msgpack.unpackb(payload, raw=False))
            at = end
    return Chunk(records, offset + at)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole record of a segment (tests and tools)."""
    offset = 0
    while True:
        chunk = read(path, offset, 1000)
        yield from chunk.records
        if not chunk.records:
            return
        offset = chunk.end
