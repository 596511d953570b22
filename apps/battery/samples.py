"""Sample files of the README walkthrough, made by the simulator: ``python -m apps.battery.samples [folder]`` writes
``healthy.csv`` and ``shorted.csv`` (30 min of 1 Hz telemetry: two 15-minute load-then-rest windows) and ``pack.png``
(a 16-bit radiometric image, centi-kelvin, with one hotspot) into ``docs/examples/battery``."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.battery_sim import CellParams, LoadProfile, Telemetry, simulate

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC).timestamp()
WINDOWS = 2
DEFAULT_DIR = Path("docs/examples/battery")
# name -> (cell, fault, seed): the same cells as the first and fourth battery of tests/battery's fleet
CELLS = {"healthy": (CellParams(capacity_ah=3.0, r0_ohm=0.030, ambient_c=20.0, initial_soc=0.95), None, 0),
         "shorted": (CellParams(capacity_ah=3.0, r0_ohm=0.030, ambient_c=23.0, initial_soc=0.95), "internal_short", 3)}


def profile(windows: int = WINDOWS) -> LoadProfile:
    """Alternating 15-minute windows: a constant 2.5 A load then rest, or 8 pulses of 3 A then rest."""
    durs: list[float] = []
    curs: list[float] = []
    for w in range(windows):
        p = LoadProfile.pulses(3.0, 30, 30, 8, 900 - 480) if w % 2 else LoadProfile.constant(2.5, 550, 350)
        durs += p.durations_s
        curs += p.currents_a
    return LoadProfile(durations_s=durs, currents_a=curs)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def telemetry(name: str) -> Telemetry:
    params, fault, seed = CELLS[name]
    return simulate(params, profile(), fault=fault, fault_severity=0.8, seed=seed)


def csv_bytes(tel: Telemetry, t0: float = T0) -> bytes:
    """Comma-separated, ISO times, units in the headers (voltage in mV, SoC in %)."""
    lines = ["timestamp,Voltage (mV),Current (A),Temperature (°C),SoC (%)"]
    lines += [f"{iso(t0 + t)},{v * 1000:.2f},{i:.4f},{tc:.3f},{s * 100:.3f}"
              for t, v, i, tc, s in zip(tel.time_s, tel.voltage_v, tel.current_a, tel.temperature_c, tel.soc, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def png16(temps_c: np.ndarray) -> bytes:
    """A radiometric 16-bit grayscale PNG: each pixel is the temperature in centi-kelvin."""
    from PIL import Image

    raw = np.round((temps_c + 273.15) * 100).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")  # uint16 -> mode I;16
    return buf.getvalue()


def pack_temperatures() -> np.ndarray:
    """A 64x48 pack at 25 °C with one 6x5-pixel cell at 40 °C (ΔT 15 °C)."""
    temps = np.full((48, 64), 25.0)
    temps[10:15, 20:26] = 40.0
    return temps


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in CELLS:
        (out / f"{name}.csv").write_bytes(csv_bytes(telemetry(name)))
    (out / "pack.png").write_bytes(png16(pack_temperatures()))
    print(f"wrote {', '.join(f'{n}.csv' for n in CELLS)}, pack.png to {out}")


if __name__ == "__main__":
    main()
