"""The history journal and its ingester without a gateway: framing, torn records, rotation, idempotent re-ingest.

Real files and a real database (SQLite and PostgreSQL); a writer is "dead" when its lock is released, as after kill -9.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from auth_api.core import db
from auth_api.ingester import OFFSETS, Ingester, IngestMetrics
from auth_api.journal import HEADER, JournalWriter, iter_records, new_prediction_id, segments, writer_alive
from auth_api.proxy.records import journal


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


def _row(i: int) -> dict[str, Any]:
    return {"user_id": None, "api_key_id": None, "model": f"m{i % 3}", "version": "1", "protocol": "http", "status": 200,
            "gateway_ms": 0.1, "upstream_ms": 0.2, "client_ip": "127.0.0.1", "created_at": 1.7e9 + i}


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM predictions")).scalar() or 0)


def _ingester(engine: Engine, d: Path, **kw: Any) -> Ingester:
    return Ingester(engine, d, lambda m, v: None, batch_size=7, **kw)


def test_records_round_trip_and_ingest_once(tmp_path: Path, engine: Engine) -> None:
    w = JournalWriter(tmp_path, segment_bytes=1 << 20)
    ids = [new_prediction_id() for _ in range(50)]
    assert ids == sorted(ids), "UUIDv7 ids sort by minting time"
    for i, pid in enumerate(ids):
        journal(w, pid, _row(i))
    seg = tmp_path / w.segment
    assert [r["id"] for r in iter_records(seg)] == ids
    ing = _ingester(engine, tmp_path)
    assert ing.run_once() == 50
    assert ing.run_once() == 0  # nothing new: no re-insert
    assert _count(engine) == 50
    assert seg.exists(), "the live writer's segment is kept"
    w.close()
    ing.run_once()
    assert not seg.exists() and not list(tmp_path.glob("gw-*")), "a dead writer's ingested segment and lock are removed"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM journal_offsets")).scalar() == 0
        got = {r[0] for r in conn.execute(text("SELECT prediction_id FROM predictions"))}
    assert got == set(ids)
    ing.close()


def test_torn_last_record_waits_for_a_live_writer_and_is_skipped_once_it_died(tmp_path: Path, engine: Engine) -> None:
    w = JournalWriter(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        journal(w, new_prediction_id(), _row(i))
    seg = tmp_path / w.segment
    # Half a frame, as a crash in the middle of a write leaves it (or a write still being copied in).
    with open(seg, "ab") as f:
        f.write(HEADER.pack(100, 0) + b"x" * 10)
    metrics = IngestMetrics(None)
    ing = _ingester(engine, tmp_path, metrics=metrics)
    assert ing.run_once() == 3
    assert ing.run_once() == 0 and seg.exists(), "a live writer's incomplete tail is waited for"
    assert metrics.torn._value.get() == 0
    assert writer_alive(tmp_path, w.writer_id)
    w.close()  # the process is gone: its tail can never complete
    assert not writer_alive(tmp_path, w.writer_id)
    assert ing.run_once() == 0
    assert not seg.exists() and metrics.torn._value.get() == 1
    assert _count(engine) == 3
    ing.close()


def test_crc_mismatch_is_not_a_record(tmp_path: Path, engine: Engine) -> None:
    w = JournalWriter(tmp_path, segment_bytes=1 << 20)
    for i in range(4):
        journal(w, new_prediction_id(), _row(i))
    seg = tmp_path / w.segment
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the last record's payload
    seg.write_bytes(bytes(data))
    w.close()
    ing = _ingester(engine, tmp_path)
    assert ing.run_once() == 3
    assert _count(engine) == 3
    ing.close()


def test_segments_rotate_and_ingested_sealed_ones_are_deleted(tmp_path: Path, engine: Engine) -> None:
    w = JournalWriter(tmp_path, segment_bytes=4096)
    for i in range(200):
        journal(w, new_prediction_id(), _row(i))
    segs = segments(tmp_path)[w.writer_id]
    assert len(segs) > 3 and segs[-1].name == w.segment
    ing = _ingester(engine, tmp_path)
    assert ing.run_once() == 200
    assert [s.name for s in segments(tmp_path)[w.writer_id]] == [w.segment], "sealed segments deleted once ingested"
    assert _count(engine) == 200
    w.close()
    ing.close()


def test_reingesting_the_same_records_duplicates_nothing(tmp_path: Path, engine: Engine) -> None:
    """An offset lost (or never committed) means records are read twice: the prediction id keeps them single."""
    w = JournalWriter(tmp_path, segment_bytes=1 << 20)
    for i in range(20):
        journal(w, new_prediction_id(), _row(i))
    ing = _ingester(engine, tmp_path)
    assert ing.run_once() == 20
    ing.close()
    with engine.begin() as conn:
        conn.execute(OFFSETS.delete())
    again = _ingester(engine, tmp_path)  # a new ingester starts from the (now missing) committed offsets
    assert again.run_once() == 20
    assert _count(engine) == 20
    again.close()
    w.close()


def test_only_one_ingester_works_a_directory(tmp_path: Path, engine: Engine) -> None:
    w = JournalWriter(tmp_path, segment_bytes=1 << 20)
    journal(w, new_prediction_id(), _row(0))
    first, second = _ingester(engine, tmp_path), _ingester(engine, tmp_path)
    assert first.run_once() == 1
    journal(w, new_prediction_id(), _row(1))
    assert second.run_once() == 0, "the second waits while the first holds the directory"
    first.close()
    assert second.run_once() == 1, "and takes over, from the committed offset, when the first is gone"
    assert _count(engine) == 2
    second.close()
    w.close()


def test_journal_files_are_private(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "j", segment_bytes=1 << 20)
    journal(w, new_prediction_id(), _row(0))
    assert os.stat(tmp_path / "j" / w.segment).st_mode & 0o077 == 0
    w.close()
