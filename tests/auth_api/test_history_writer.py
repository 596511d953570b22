"""The batched history writer: a full queue waits instead of dropping, and stop() drains everything acknowledged."""

from __future__ import annotations

import asyncio

from sqlmodel import Session, func, select

from auth_api.core import db as dbmod
from auth_api.core.metrics import GatewayMetrics
from auth_api.history_writer import HistoryWriter
from auth_api.models import Prediction, utcnow


def _rec(i: int) -> dict:
    return {"model": "m", "version": "1", "protocol": "http", "status": 200, "gateway_ms": 0.1, "upstream_ms": 1.0,
            "output_label": str(i % 3), "created_at": utcnow()}


def test_backpressure_never_drops_and_stop_drains(db_url: str) -> None:
    engine = dbmod.make_engine(db_url)
    dbmod.upgrade(engine)
    metrics = GatewayMetrics()
    n = 2000

    async def run() -> None:
        w = HistoryWriter(engine, metrics, maxsize=16, batch_size=50, flush_interval_s=0.01)
        w.start()
        # 50 concurrent producers into a queue of 16: most of them must wait for room
        await asyncio.gather(*(w.put(_rec(i)) for i in range(n)))
        await w.stop()  # everything acknowledged is written before stop returns

    asyncio.run(run())
    with Session(engine) as db:
        assert db.exec(select(func.count()).select_from(Prediction)).one() == n
    assert metrics.history_backpressure._value.get() > 0
    assert metrics.history_written._value.get() == n
    engine.dispose()


def test_a_failing_summary_still_writes_the_row(db_url: str) -> None:
    engine = dbmod.make_engine(db_url)
    dbmod.upgrade(engine)

    def broken(rec: dict) -> dict:
        raise ValueError("cannot parse")

    async def run() -> None:
        w = HistoryWriter(engine, GatewayMetrics(), maxsize=10, batch_size=10, flush_interval_s=0.01)
        w.start()
        await w.put(_rec(1), broken)
        await w.stop()

    asyncio.run(run())
    with Session(engine) as db:
        assert db.exec(select(func.count()).select_from(Prediction)).one() == 1
    engine.dispose()
