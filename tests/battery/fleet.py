"""A simulated fleet for the battery-app tests: telemetry from training.battery_sim, written as CSV, TXT, XLSX or JSON."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from apps.battery.samples import T0, WINDOWS, csv_bytes, iso, png16, profile
from training.battery_sim import CellParams, Telemetry, simulate

__all__ = ["T0", "WINDOWS", "Cell", "csv_bytes", "fleet", "iso", "json_samples", "png16", "txt_bytes", "xlsx_bytes"]


@dataclass
class Cell:
    name: str
    params: CellParams
    fault: str | None
    tel: Telemetry


def fleet() -> list[Cell]:
    """Three healthy cells (manufacturing spread), one internal short, one overheating (cooling failure)."""
    # healthy-a and shorted are the cells of the walkthrough's docs/examples/battery files (apps.battery.samples)
    spec = [("healthy-a", 3.00, 0.030, None), ("healthy-b", 2.85, 0.034, None), ("healthy-c", 3.10, 0.028, None),
            ("shorted", 3.00, 0.030, "internal_short"), ("hot", 2.95, 0.031, "overheating")]
    out = []
    for k, (name, q, r0, fault) in enumerate(spec):
        params = CellParams(capacity_ah=q, r0_ohm=r0, ambient_c=20.0 + k, initial_soc=0.95)
        out.append(Cell(name, params, fault, simulate(params, profile(), fault=fault, fault_severity=0.8, seed=k)))
    return out


def columns(tel: Telemetry) -> dict[str, np.ndarray]:
    return {"time": T0 + tel.time_s, "voltage": tel.voltage_v, "current": tel.current_a, "temperature": tel.temperature_c,
            "soc": tel.soc}


def txt_bytes(tel: Telemetry) -> bytes:
    """Tab-separated, seconds after a start instant given with the upload, short headers."""
    lines = ["t\tV\tI\ttemp_c"]
    lines += [f"{t:.0f}\t{v:.5f}\t{i:.4f}\t{tc:.3f}"
              for t, v, i, tc in zip(tel.time_s, tel.voltage_v, tel.current_a, tel.temperature_c, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def xlsx_bytes(tel: Telemetry) -> bytes:
    """An XLSX sheet with epoch-second times."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("telemetry")
    ws.append(["time_s", "voltage_v", "current_a", "temperature_c", "soc"])
    c = columns(tel)
    for row in zip(c["time"], c["voltage"], c["current"], c["temperature"], c["soc"], strict=True):
        ws.append([float(x) for x in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def json_samples(tel: Telemetry) -> list[dict[str, object]]:
    c = columns(tel)
    return [{"time": iso(t), "voltage": round(float(v), 5), "current": round(float(i), 4), "temperature": round(float(tc), 3),
             "soc": round(float(s), 4)}
            for t, v, i, tc, s in zip(c["time"], c["voltage"], c["current"], c["temperature"], c["soc"], strict=True)]
