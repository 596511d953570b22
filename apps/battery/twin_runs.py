"""Simulation runs of a fitted twin: a load profile (explicit or a preset) repeated for some hours -> series + summary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.battery.twin import cell_batch
from auth_api.core.errors import InvalidInput
from training.battery_sim import CellParams, LoadProfile, simulate_cells

MAX_HOURS = 72.0
MAX_SIM_STEPS = 20_000
MAX_SERIES_POINTS = 2_000


def profile_of(spec: dict[str, Any], capacity_ah: float) -> LoadProfile:
    """A load: ``{"durations_s", "currents_a"}`` or a preset ``constant`` / ``pulses`` / ``drive_cycle`` (currents in A,
    or ``c_rate`` relative to the twin's capacity)."""
    kind = spec.get("kind")
    try:
        cur = float(spec["current_a"]) if "current_a" in spec else float(spec.get("c_rate", 0.5)) * capacity_ah
        if kind is None and "durations_s" in spec:
            return LoadProfile.model_validate({k: spec[k] for k in ("durations_s", "currents_a")})
        if kind == "constant":
            return LoadProfile.constant(cur, float(spec.get("duration_s", 3600)), float(spec.get("rest_s", 0)))
        if kind == "pulses":
            return LoadProfile.pulses(cur, float(spec.get("on_s", 30)), float(spec.get("off_s", 30)),
                                      int(spec.get("n_pulses", 10)), float(spec.get("rest_s", 0)))
        if kind == "drive_cycle":
            mean = float(spec["mean_current_a"]) if "mean_current_a" in spec else cur
            return LoadProfile.drive_cycle(float(spec.get("duration_s", 1800)), mean, int(spec.get("seed", 0)),
                                           float(spec.get("rest_s", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"profile: {exc}", code="invalid_profile", details={"field": "profile"}) from None
    raise InvalidInput("profile: give durations_s + currents_a, or kind constant | pulses | drive_cycle",
                       code="invalid_profile", details={"field": "profile.kind"})


def simulate_run(params: dict[str, Any], profile: LoadProfile, hours: float, initial_soc: float) -> dict[str, Any]:
    """Drive the twin with ``profile`` (repeated) for ``hours``; series (≤ MAX_SERIES_POINTS points) + summary."""
    dt = max(1.0, math.ceil(hours * 3600.0 / MAX_SIM_STEPS))
    steps = max(1, round(hours * 3600.0 / dt))
    one = profile.sample(dt, max(1, round(profile.duration_s / dt)))
    current = np.resize(one, steps)
    n_series = int(params.get("cells_in_series", 1))
    theta = np.array([[params["capacity_ah"], params["r0_ohm"], params["r1_ohm"], params["c1_f"], initial_soc]])
    ambient = float(params.get("ambient_c", 25.0))
    bt = simulate_cells(cell_batch(theta, ambient, ambient), current[None, :], dt, np.random.default_rng(0))
    cut = CellParams().v_cutoff
    v = bt.true_voltage_v[0]
    below = np.flatnonzero(v < cut)
    m = int(below[0]) + 1 if len(below) else int(bt.n_valid[0])
    stride = max(1, math.ceil(m / MAX_SERIES_POINTS))
    t = bt.time_s[:m]
    i = bt.current_a[0, :m]
    series = {"time_s": t[::stride].round(1).tolist(), "current_a": (i[::stride]).round(4).tolist(),
              "voltage_v": (v[:m][::stride] * n_series).round(4).tolist(),
              "temperature_c": bt.true_temperature_c[0, :m][::stride].round(3).tolist(),
              "soc": bt.soc[0, :m][::stride].round(4).tolist()}
    summary = {"duration_s": float(m * dt), "dt_s": dt, "cutoff_reached": bool(len(below)),
               "end_soc": float(bt.soc[0, m - 1]), "min_voltage_v": float(v[:m].min() * n_series),
               "max_temperature_c": float(bt.true_temperature_c[0, :m].max()),
               "ah_discharged": float(i.sum() * dt / 3600.0),
               "energy_wh": float((i * v[:m]).sum() * n_series * dt / 3600.0), "points": len(series["time_s"]),
               "stride": stride}
    return {"series": series, "summary": summary}
