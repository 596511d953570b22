"""Telemetry rows: idempotent inserts keyed by (battery, time), range reads and server-side bucket means."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Integer, Table, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite

from apps.battery.models import Sample
from apps.battery.telemetry import Parsed

CHUNK = 5_000
MAX_POINTS = 5_000  # points one GET returns at most; longer ranges are averaged into buckets
TABLE: Table = Sample.__table__  # type: ignore[attr-defined]
CHANNELS = ("voltage", "current", "temperature", "soc", "ambient")


def insert(conn: Connection, battery_id: int, p: Parsed) -> int:
    """Insert the samples (ON CONFLICT DO NOTHING); returns how many were new (the rest were already stored)."""
    if len(p.ts) == 0:
        return 0
    lo, hi = float(p.ts[0]), float(p.ts[-1])
    before = _count(conn, battery_id, lo, hi)
    ins = (postgresql.insert(TABLE) if conn.dialect.name == "postgresql" else sqlite.insert(TABLE)).on_conflict_do_nothing(
        index_elements=["battery_id", "ts"])
    soc = p.soc if p.soc is not None else np.full(len(p.ts), np.nan)
    amb = p.ambient if p.ambient is not None else np.full(len(p.ts), np.nan)
    for start in range(0, len(p.ts), CHUNK):
        sl = slice(start, start + CHUNK)
        rows = [{"battery_id": battery_id, "ts": float(t), "voltage": float(v), "current": float(i), "temperature": float(c),
                 "soc": None if math.isnan(s) else float(s), "ambient": None if math.isnan(a) else float(a)}
                for t, v, i, c, s, a in zip(p.ts[sl], p.voltage[sl], p.current[sl], p.temperature[sl], soc[sl], amb[sl],
                                            strict=True)]
        conn.execute(ins, rows)
    return _count(conn, battery_id, lo, hi) - before


def _count(conn: Connection, battery_id: int, lo: float, hi: float) -> int:
    c = TABLE.c
    return int(conn.execute(select(func.count()).where(c.battery_id == battery_id, c.ts >= lo, c.ts <= hi)).scalar_one())


def span(conn: Connection, battery_id: int, lo: float | None, hi: float | None) -> tuple[int, float | None, float | None]:
    """(samples, first time, last time) of the battery within [lo, hi]."""
    c = TABLE.c
    q = select(func.count(), func.min(c.ts), func.max(c.ts)).where(*_range(battery_id, lo, hi))
    n, first, last = conn.execute(q).one()
    return int(n), first, last


def _range(battery_id: int, lo: float | None, hi: float | None) -> list[Any]:
    c = TABLE.c
    cond = [c.battery_id == battery_id]
    if lo is not None:
        cond.append(c.ts >= lo)
    if hi is not None:
        cond.append(c.ts <= hi)
    return cond


@dataclass
class Series:
    ts: np.ndarray
    voltage: np.ndarray
    current: np.ndarray
    temperature: np.ndarray
    soc: np.ndarray  # NaN where not reported
    ambient: np.ndarray


def read(conn: Connection, battery_id: int, lo: float | None, hi: float | None) -> Series:
    """Every sample of the range, ordered by time (for analyses and twin fits)."""
    c = TABLE.c
    rows = conn.execute(select(c.ts, c.voltage, c.current, c.temperature, c.soc, c.ambient)
                        .where(*_range(battery_id, lo, hi)).order_by(c.ts)).all()
    arr = np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64).reshape(-1, 6)
    return Series(*(arr[:, k] for k in range(6)))


def buckets(conn: Connection, battery_id: int, lo: float, every: float, hi: float | None) -> list[dict[str, Any]]:
    """Bucket means of ``every`` seconds from ``lo`` (a bucket's time is its first sample's), computed by the database."""
    c = TABLE.c
    pos = (c.ts - lo) / every
    # floor on PostgreSQL (its float -> int cast rounds); SQLite's cast truncates, the same for ts >= lo
    bucket = func.floor(pos) if conn.dialect.name == "postgresql" else cast(pos, Integer)
    q = (select(func.min(c.ts), *(func.avg(getattr(c, ch)) for ch in CHANNELS), func.count())
         .where(*_range(battery_id, lo, hi)).group_by(bucket).order_by(bucket).limit(MAX_POINTS))
    return [{"t": r[0], **dict(zip(CHANNELS, r[1:6], strict=True)), "n": int(r[6])} for r in conn.execute(q).all()]


def raw(conn: Connection, battery_id: int, lo: float | None, hi: float | None) -> list[dict[str, Any]]:
    c = TABLE.c
    q = select(c.ts, *(getattr(c, ch) for ch in CHANNELS)).where(*_range(battery_id, lo, hi)).order_by(c.ts).limit(MAX_POINTS)
    return [{"t": r[0], **dict(zip(CHANNELS, r[1:], strict=True))} for r in conn.execute(q).all()]
