"""Telemetry storage on SQLite and PostgreSQL: idempotent inserts keyed by (battery, time), bucket means in SQL, and the
intake's column mapping (no server needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlmodel import Session

from apps.battery import store, telemetry
from apps.battery.models import Battery
from auth_api.core import db
from auth_api.models import User


def test_insert_is_idempotent_and_buckets_are_means(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        with Session(engine) as s:
            u = User(username="cellkeeper", username_key="cellkeeper", password_hash="!")
            s.add(u)
            s.commit()
            assert u.id is not None
            b = Battery(owner_id=u.id, name="b", serial="S1", chemistry="lfp", nominal_capacity_ah=2.0, nominal_voltage_v=3.2)
            s.add(b)
            s.commit()
            bid = b.id
        assert bid is not None
        t = np.arange(0.0, 600.0, 1.0) + 1.8e9
        frame = pd.DataFrame({"time": t, "voltage": 3.2 + t % 7 / 100, "current": np.ones_like(t), "temperature": 25.0})
        parsed = telemetry.parse_frame(frame)
        with engine.begin() as conn:
            assert store.insert(conn, bid, parsed) == 600
        with engine.begin() as conn:
            assert store.insert(conn, bid, parsed) == 0  # ON CONFLICT DO NOTHING
            rows = store.buckets(conn, bid, float(t[0]), 60.0, None)
            assert [r["n"] for r in rows] == [60] * 10 and rows[1]["t"] == t[60]
            assert rows[1]["voltage"] == pytest.approx(float(np.mean(frame["voltage"][60:120])))
            assert store.span(conn, bid, float(t[100]), float(t[199]))[0] == 100
        with Session(engine) as s:  # deleting the battery takes its telemetry with it
            s.delete(s.get(Battery, bid))
            s.commit()
        with engine.begin() as conn:
            assert store.span(conn, bid, None, None)[0] == 0
    finally:
        engine.dispose()


def test_header_aliases_and_units() -> None:
    frame = pd.DataFrame({"Timestamp": ["2026-12-01T00:00:00Z", "2026-12-01T00:00:01Z"], "Voltage (mV)": [3700, 3690],
                          "Current (mA)": [1500, -500], "Temp (K)": [298.15, 299.15], "SoC (%)": [80, 79.9],
                          "t_amb": [20, 20], "site": ["a", "b"]})
    p = telemetry.parse_frame(frame)
    assert p.columns == {"time": "Timestamp", "voltage": "Voltage (mV)", "current": "Current (mA)", "temperature": "Temp (K)",
                         "soc": "SoC (%)", "ambient": "t_amb"}
    assert p.voltage.tolist() == [3.7, 3.69] and p.current.tolist() == [1.5, -0.5]
    assert p.soc is not None and p.soc.tolist() == pytest.approx([0.8, 0.799])
    assert p.temperature.tolist() == pytest.approx([25.0, 26.0])
    assert p.ts[0] == pd.Timestamp("2026-12-01T00:00:00Z").timestamp()
    ms = telemetry.parse_frame(pd.DataFrame({"t": [1.8e12], "v": [3.7], "i": [1.0], "temp": [25.0]}))
    assert ms.rejected == [{"row": 1, "reason": "time out of range (epoch seconds 1970..2200, or ISO-8601)"}]
