"""The history ingester: journal records → ``predictions`` rows (``python -m auth_api.ingester``, or a gateway thread).

Each batch's rows and the segment's new offset commit in one transaction, and rows insert with ON CONFLICT DO NOTHING on
the prediction id, so a crash of the gateway or of the ingester loses and duplicates nothing. One ingester works a
journal directory at a time (an flock on ``ingester.lock``); another one waits and takes over when that one dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from auth_api.journal import Chunk, Segment, read, segments, writer_alive
from auth_api.models import Prediction
from auth_api.proxy.summaries import LabelLookup, grpc_finisher, http_finisher
from auth_api.proxy.task_summaries import task_failure_finisher, task_finisher

logger = logging.getLogger(__name__)
OFFSETS = sa.Table("journal_offsets", sa.MetaData(), sa.Column("segment", sa.String(200), primary_key=True),
                   sa.Column("offset", sa.BigInteger, nullable=False), sa.Column("records", sa.BigInteger, nullable=False),
                   sa.Column("updated_at", sa.Float, nullable=False))
COLUMNS = tuple(c for c in Prediction.model_fields if c != "id")
Hook = Callable[[Connection, list[dict[str, Any]]], None]
"""Runs on each batch of new rows inside its transaction: where alert rules and usage counters hang off history."""


def summarize(row: dict[str, Any], spec: Sequence[Any], labels: LabelLookup) -> dict[str, Any]:
    """Fill a row's summary columns from the raw bytes its journal record carries (``spec[0]`` says which kind)."""
    kind, args = spec[0], spec[1:]
    if kind == "http":
        return http_finisher(args[0], args[1], args[2], args[3], labels, args[4])(row)
    if kind == "grpc":
        return grpc_finisher(args[0], args[1], labels, streamed=bool(args[2]))(row)
    if kind == "task":
        try:
            doc = json.loads(args[3])
        except ValueError:
            doc = None
        return task_finisher(args[0], args[1], args[2], doc)(row)
    if kind == "task_failure":
        return task_failure_finisher(args[0], args[1])(row)
    raise ValueError(f"unknown summary kind {kind!r}")


class IngestMetrics:
    def __init__(self, registry: Any, written: Any = None):
        from prometheus_client import Counter, Gauge

        self.rows = Counter("history_ingested_rows_total", "History rows the ingester inserted.", registry=registry)
        self.lag_s = Gauge("history_ingest_lag_seconds", "Age of the newest record when its batch committed (s).",
                           registry=registry)
        self.backlog = Gauge("history_ingest_backlog_records", "Records found waiting at the start of the last pass.",
                             registry=registry)
        self.torn = Counter("history_journal_torn_total", "Sealed segments that ended in a torn record (skipped).",
                            registry=registry)
        self.written = written  # the gateway's gateway_history_written_total when embedded


class Ingester:
    def __init__(self, engine: Engine, directory: Path, labels: LabelLookup, *, batch_size: int = 500, poll_s: float = 0.2,
                 metrics: IngestMetrics | None = None, hooks: Sequence[Hook] = ()):
        self.engine = engine
        self.directory = directory
        self.labels = labels
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.metrics = metrics
        self.hooks = list(hooks)
        self._wake = threading.Event()
        self._lock_fd = -1
        self._offsets: dict[str, int] = {}
        from sqlalchemy.dialects import postgresql, sqlite

        insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert_rows = insert(sa.inspect(Prediction).local_table).on_conflict_do_nothing(index_elements=["prediction_id"])
        # Rows go to the driver's executemany as they are: SQLAlchemy's per-row parameter processing was a third of the
        # insert's CPU. The statement is compiled once; the one column that needs the dialect's processing is created_at.
        compiled = self._insert_rows.inline().compile(dialect=engine.dialect, column_keys=list(COLUMNS))  # no RETURNING
        self._insert_sql = str(compiled)
        self._insert_keys: list[str] | None = list(compiled.positiontup or ()) if compiled.positional else None
        created = sa.inspect(Prediction).local_table.c.created_at.type
        self._created_at = created.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        up = insert(OFFSETS)
        self._upsert_offset = up.on_conflict_do_update(index_elements=["segment"], set_={
            "offset": up.excluded.offset, "records": OFFSETS.c.records + up.excluded.records,
            "updated_at": up.excluded.updated_at})

    # --- one pass ------------------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Ingest everything whole in the journal directory now; the number of records read."""
        if not self._hold_lock():
            return 0
        total = 0
        for writer, segs in segments(self.directory).items():
            alive = writer_alive(self.directory, writer)
            for i, seg in enumerate(segs):
                # Sealed is decided before reading: whatever is read after it is all the segment will ever hold.
                total += self._segment(seg, sealed=i < len(segs) - 1 or not alive)
            if not alive and not any(s.path.exists() for s in segs):
                (self.directory / f"{writer}.lock").unlink(missing_ok=True)
        if self.metrics is not None:
            self.metrics.backlog.set(total)
        return total

    def _segment(self, seg: Segment, *, sealed: bool) -> int:
        offset = self._offsets.get(seg.name, 0)
        n = 0
        try:
            while (chunk := read(seg.path, offset, self.batch_size)).records:
                self._commit(seg.name, chunk)
                n += len(chunk.records)
                offset = chunk.end
            if not sealed:
                return n
            size = seg.path.stat().st_size
        except FileNotFoundError:  # deleted by an ingester that held the lock before us
            return n
        if offset < size:
            logger.warning("journal %s ends in %d bytes that are not a whole record (a crash mid-write): skipped",
                           seg.name, size - offset)
            if self.metrics is not None:
                self.metrics.torn.inc()
        seg.path.unlink(missing_ok=True)
        with self.engine.begin() as conn:
            conn.execute(OFFSETS.delete().where(OFFSETS.c.segment == seg.name))
        self._offsets.pop(seg.name, None)
        return n

    def _commit(self, segment: str, chunk: Chunk) -> None:
        rows = [self._row(r) for r in chunk.records]
        now = time.time()
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._insert_sql, self._driver_params(rows))  # type: ignore[arg-type]
            conn.execute(self._upsert_offset, {"segment": segment, "offset": chunk.end, "records": len(rows),
                                               "updated_at": now})
            for hook in self.hooks:
                hook(conn, rows)
        self._offsets[segment] = chunk.end
        if self.metrics is not None:
            self.metrics.rows.inc(len(rows))
            if self.metrics.written is not None:
                self.metrics.written.inc(len(rows))
            self.metrics.lag_s.set(max(0.0, now - rows[-1]["created_at"].timestamp()))

    def _driver_params(self, rows: list[dict[str, Any]]) -> list[Any]:
        conv = self._created_at
        if conv is not None:
            rows = [{**r, "created_at": conv(r["created_at"])} for r in rows]
        keys = self._insert_keys
        return rows if keys is None else [tuple(r[k] for k in keys) for r in rows]

    def _row(self, rec: dict[str, Any]) -> dict[str, Any]:
        row = dict(rec["r"])
        row["prediction_id"] = rec["id"]
        if rec.get("s"):
            try:
                row = summarize(row, rec["s"], self.labels)
            except Exception:  # a summary that cannot be computed must not lose the row
                logger.exception("history summary failed for %s", row.get("model"))
        out = {c: row.get(c) for c in COLUMNS}
        out["created_at"] = datetime.fromtimestamp(float(row.get("created_at") or time.time()), UTC)
        return out

    def _hold_lock(self) -> bool:
        if self._lock_fd >= 0:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "ingester.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        with self.engine.connect() as conn:  # the previous holder's progress
            self._offsets = {r.segment: int(r.offset) for r in conn.execute(sa.select(OFFSETS.c.segment, OFFSETS.c.offset))}
        logger.info("history ingester working %s (%d segments in progress)", self.directory, len(self._offsets))
        return True

    # --- the loop --------------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Look at the journal now rather than at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set, then once more (everything the writers appended before it)."""
        while not stop.is_set():
            try:
                n = self.run_once()
            except Exception:  # the database away: retry, the journal keeps everything meanwhile
                logger.exception("history ingest pass failed; retrying")
                n = 0
                stop.wait(1.0)
            if n == 0:
                self._wake.wait(self.poll_s)
                self._wake.clear()
        self.drain()

    def drain(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.run_once()
                return
            except Exception:
                if time.monotonic() > deadline:
                    logger.error("database unavailable at shutdown: history stays in the journal for the next ingester")
                    return
                time.sleep(0.5)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def committed(engine: Engine, directory: Path, segment: str, offset: int) -> bool:
    """Whether ``segment`` is ingested up to ``offset`` (a deleted segment was ingested whole)."""
    with engine.connect() as conn:
        done = conn.execute(sa.select(OFFSETS.c.offset).where(OFFSETS.c.segment == segment)).scalar()
    if done is not None:
        return int(done) >= offset
    return not (directory / segment).exists() or offset == 0


class EmbeddedIngester:
    """The ingester loop in a thread of the gateway (tests, ``python -m auth_api`` without ``mlstack up``)."""

    def __init__(self, ingester: Ingester):
        self.ingester = ingester
        self._stop = threading.Event()
        self._thread = threading.Thread(target=ingester.run, args=(self._stop,), name="history-ingester", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ingester.wake()
        self._thread.join(timeout=60)
        self.ingester.close()


def main() -> None:
    """``python -m auth_api.ingester``: ingest ``var/journal`` into the database until SIGTERM/SIGINT."""
    from prometheus_client import REGISTRY, start_http_server

    from auth_api.alerts.engine import AlertHook
    from auth_api.catalog import Catalog
    from auth_api.core import db
    from mlstack.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    engine = db.make_engine(db.database_url(settings))
    while not sa.inspect(engine).has_table("journal_offsets"):  # the gateway migrates the schema; never two at once
        logger.info("waiting for the gateway to create the schema")
        time.sleep(1.0)
    if settings.ingester_metrics_port:
        start_http_server(settings.ingester_metrics_port, addr=settings.gateway_host)
    ing = Ingester(engine, settings.var_dir / "journal", Catalog(settings.repository).labels,
                   batch_size=settings.gateway_history_batch_size, poll_s=settings.gateway_history_flush_interval_s,
                   metrics=IngestMetrics(REGISTRY), hooks=[AlertHook()])
    stop = threading.Event()
    def on_signal(*_: Any) -> None:
        stop.set()
        ing.wake()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    ing.run(stop)
    ing.close()
    logger.info("history ingester stopped")


if __name__ == "__main__":
    main()
