"""History off the request path: a bounded asyncio queue drained by one task that inserts batches.

A full queue makes the producer wait (backpressure, counted in metrics) rather than drop the record; a failed insert
is retried; ``stop()`` drains everything acknowledged so far before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, insert

from auth_api.core.metrics import GatewayMetrics
from auth_api.models import Prediction, utcnow

logger = logging.getLogger(__name__)

Record = dict[str, Any]
Finisher = Callable[[Record], Record]
_STOP: Any = object()
SHUTDOWN_RETRY_S = 30.0
"""How long shutdown keeps retrying a failing insert before it gives up (loudly)."""
"""Turns a raw record (may hold request/response bytes) into a row dict; runs in the writer thread, not the hot path."""


class HistoryWriter:
    def __init__(self, engine: Engine, metrics: GatewayMetrics, *, maxsize: int, batch_size: int, flush_interval_s: float):
        self.engine = engine
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue: asyncio.Queue[tuple[Record, Finisher | None]] = asyncio.Queue(maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="history-writer")

    async def put(self, record: Record, finisher: Finisher | None = None) -> None:
        """Enqueue a record; waits for room when the queue is full (never drops)."""
        item = (record, finisher)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.history_backpressure.inc()
            await self.queue.put(item)

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            if first is _STOP:
                self.queue.task_done()
                return
            self.metrics.history_queue_depth.set(self.queue.qsize() + 1)
            batch = [first]
            stop = False
            deadline = time.monotonic() + self.flush_interval_s
            while len(batch) < self.batch_size:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    # Let records pile up until the deadline, then drain them without waking per record (a wait_for
                    # per record cost a task each, ~5% of the gateway's CPU at 2,000 requests/s).
                    timeout = deadline - time.monotonic()
                    if timeout <= 0 or self._closing:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)  # set by stop(): drain without delay
                    continue
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            await self._flush(batch)
            for _ in batch:
                self.queue.task_done()
            self.metrics.history_queue_depth.set(self.queue.qsize())
            if stop:
                self.queue.task_done()
                return

    async def _flush(self, batch: list[tuple[Record, Finisher | None]]) -> None:
        delay = 0.1
        first_failure: float | None = None
        while True:
            start = time.perf_counter()
            try:
                await asyncio.to_thread(self._insert, batch)
            except Exception:
                self.metrics.history_failures.inc()
                first_failure = first_failure or time.monotonic()
                if self._closing and time.monotonic() - first_failure > SHUTDOWN_RETRY_S:
                    # Never silent: the loss is logged with its size and counted.
                    logger.error("database unavailable at shutdown: %d history rows NOT written", len(batch))
                    self.metrics.history_lost.inc(len(batch))
                    return
                logger.exception("history insert of %d rows failed; retrying in %.1fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.metrics.history_flush.observe(time.perf_counter() - start)
            self.metrics.history_written.inc(len(batch))
            return

    def _insert(self, batch: list[tuple[Record, Finisher | None]]) -> None:
        rows = []
        for rec, fin in batch:
            row = dict(rec)
            if fin is not None:
                try:
                    row = fin(row)
                except Exception:  # a summary that cannot be computed must not lose the row
                    logger.exception("history summary failed for %s", rec.get("model"))
            out = {c: row.get(c) for c in _COLUMNS}
            if out["created_at"] is None:
                out["created_at"] = utcnow()
            rows.append(out)
        with self.engine.begin() as conn:
            conn.execute(insert(Prediction), rows)

    async def flush(self) -> None:
        """Wait until everything enqueued so far is written."""
        await self.queue.join()

    async def stop(self) -> None:
        """Write everything enqueued so far, then end the task (FIFO: the stop marker comes after every record)."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self.queue.put(_STOP)
        await self._task
        self._task = None
        logger.info("history writer drained and stopped")


_COLUMNS = set(Prediction.model_fields) - {"id"}
