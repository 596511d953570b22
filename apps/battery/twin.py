"""The digital twin: fit the equivalent-circuit cell of ``training.battery_sim`` to a battery's telemetry, simulate it,
and measure how far the measured voltage/temperature drift from what the twin predicts (an anomaly signal).

The fit drives the simulator with the measured current and minimises the voltage error over capacity, R0, R1, C1 (and
the start SoC when no SoC was reported) with ``scipy.optimize.least_squares``. The Jacobian is taken by finite
differences on a batch: the base cell and one perturbed cell per parameter run through ``simulate_cells`` together,
so an iteration costs about one simulation. A pack is modelled as ``cells_in_series`` identical cells
(nominal voltage / 3.6 V, at least 1): its voltage is divided by that count before fitting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from apps.battery.store import Series
from apps.battery.windows import Windows
from auth_api.core.errors import InvalidInput
from training.battery_sim import CellArrays, CellParams, ocv, simulate_cells

CELL_V = 3.6
MAX_FIT_STEPS = 7_200
MIN_FIT_S = 300.0
# name, lower, upper (fit in log space: every parameter is positive and they span decades)
PARAMS = (("capacity_ah", 0.05, 500.0), ("r0_ohm", 1e-4, 1.0), ("r1_ohm", 1e-4, 1.0), ("c1_f", 10.0, 1e6),
          ("initial_soc", 0.01, 1.0))
RESIDUAL_V_MV = 25.0  # RMS voltage error of a window above which the twin flags it
RESIDUAL_T_C = 2.0
_SOC_GRID = np.linspace(0.0, 1.0, 2001)
_OCV_GRID = ocv(_SOC_GRID)


def cells_in_series(nominal_voltage_v: float) -> int:
    return max(1, round(nominal_voltage_v / CELL_V))


def soc_from_voltage(v_cell: float) -> float:
    """The SoC whose open-circuit voltage is ``v_cell`` (a rested cell's terminal voltage)."""
    return float(np.clip(np.interp(v_cell, _OCV_GRID, _SOC_GRID), 0.02, 1.0))


def cell_batch(theta: np.ndarray, ambient: float, t0: np.ndarray | float) -> CellArrays:
    """A batch of cells, one per row of ``theta`` ([B, 5] in PARAMS order)."""
    b = len(theta)
    base = CellArrays.from_params(CellParams(ambient_c=ambient, v_cutoff=2.0))
    one = np.ones(b)
    return CellArrays(capacity_ah=theta[:, 0], r0_ohm=theta[:, 1], r1_ohm=theta[:, 2], c1_f=theta[:, 3],
                      activation_k=base.activation_k * one, heat_capacity_j_per_k=base.heat_capacity_j_per_k * one,
                      h_a_w_per_k=base.h_a_w_per_k * one, ambient_c=one * ambient, initial_temperature_c=one * t0,
                      initial_soc=theta[:, 4], v_cutoff=base.v_cutoff * one, r_short_ohm=one * np.inf, p_ext_w=one * 0.0,
                      v_drift_v_per_s=one * 0.0, t_drift_c_per_s=one * 0.0)


@dataclass
class FitData:
    current: np.ndarray  # per cell, A, on the grid
    voltage: np.ndarray  # per cell, V
    temperature: np.ndarray
    dt: float
    ambient: float
    soc0: float | None
    n_series: int
    t_from: float
    t_to: float


def prepare(s: Series, nominal_voltage_v: float, ambient: float) -> FitData:
    if len(s.ts) < 2 or s.ts[-1] - s.ts[0] < MIN_FIT_S:
        raise InvalidInput(f"the twin needs at least {MIN_FIT_S:g} s of telemetry in the range", code="not_enough_telemetry",
                           details={"samples": len(s.ts)})
    span = float(s.ts[-1] - s.ts[0])
    dt = max(1.0, math.ceil(span / MAX_FIT_STEPS))
    grid = s.ts[0] + np.arange(int(span // dt) + 1) * dt
    n = cells_in_series(nominal_voltage_v)
    # current is piecewise constant between samples: take the last sample at or before each grid point
    idx = np.clip(np.searchsorted(s.ts, grid, side="right") - 1, 0, len(s.ts) - 1)
    soc0 = float(s.soc[0]) if np.isfinite(s.soc[0]) and s.soc[0] > 0 else None
    return FitData(current=s.current[idx], voltage=np.interp(grid, s.ts, s.voltage) / n,
                   temperature=np.interp(grid, s.ts, s.temperature), dt=dt, ambient=ambient, soc0=soc0, n_series=n,
                   t_from=float(s.ts[0]), t_to=float(s.ts[-1]))


def _initial(d: FitData, capacity_guess: float) -> np.ndarray:
    di, dv = np.diff(d.current), np.diff(d.voltage)
    step = np.abs(di) > 0.1
    r0 = float(np.median(-dv[step] / di[step])) if step.any() else 0.03
    r0 = float(np.clip(r0 if math.isfinite(r0) else 0.03, 2e-4, 0.5))
    soc0 = d.soc0 if d.soc0 is not None else soc_from_voltage(float(d.voltage[0] + d.current[0] * r0))
    return np.array([capacity_guess, r0, 0.5 * r0, 2500.0, soc0])


def fit(d: FitData, capacity_guess: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, fit report) of the cell that best explains the measured voltage."""
    free = [0, 1, 2, 3] + ([] if d.soc0 is not None else [4])
    x0 = _initial(d, capacity_guess)
    lo = np.array([p[1] for p in PARAMS])
    hi = np.array([p[2] for p in PARAMS])
    x0 = np.clip(x0, lo * 1.001, hi * 0.999)
    rng = np.random.default_rng(0)
    h = 1e-4
    cache: dict[bytes, np.ndarray] = {}

    def full(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free] = np.exp(z)
        return x

    def batch(z: np.ndarray) -> np.ndarray:
        key = z.tobytes()
        if key not in cache:
            thetas = np.stack([full(z)] + [full(z + h * np.eye(len(z))[k]) for k in range(len(z))])
            thetas[:, 4] = np.minimum(thetas[:, 4], 1.0)
            cur = np.broadcast_to(d.current, (len(thetas), len(d.current)))
            bt = simulate_cells(cell_batch(thetas, d.ambient, float(d.temperature[0])), np.ascontiguousarray(cur), d.dt, rng)
            cache.clear()
            cache[key] = (bt.true_voltage_v - d.voltage[None, :]) * 1000.0  # mV
        return cache[key]

    def residual(z: np.ndarray) -> np.ndarray:
        return batch(z)[0]

    def jac(z: np.ndarray) -> np.ndarray:
        r = batch(z)
        return ((r[1:] - r[0]) / h).T

    res = least_squares(residual, np.log(x0[free]), jac=jac, bounds=(np.log(lo[free]), np.log(hi[free])), method="trf",
                        x_scale="jac", max_nfev=60, xtol=1e-6, ftol=1e-8)
    theta = full(res.x)
    names = [p[0] for p in PARAMS]
    params = {k: float(v) for k, v in zip(names, theta, strict=True)}
    params.update(ambient_c=d.ambient, cells_in_series=d.n_series)
    sim = simulate_cells(cell_batch(theta[None, :], d.ambient, float(d.temperature[0])), d.current[None, :].copy(), d.dt, rng)
    report = {"rmse_v_mv": float(np.sqrt(np.mean(res.fun**2))),
              "rmse_t_c": float(np.sqrt(np.mean((sim.true_temperature_c[0] - d.temperature) ** 2))),
              "samples": len(d.voltage), "dt_s": d.dt, "nfev": int(res.nfev), "converged": bool(res.success),
              "fitted": [names[k] for k in free], "from_ts": d.t_from, "to_ts": d.t_to}
    return params, report


def residuals(params: dict[str, Any], w: Windows, soc_at_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMS voltage (mV, per cell) and temperature (°C) error of the twin against each window ([B] each)."""
    b = len(w.start)
    if b == 0:
        return np.zeros(0), np.zeros(0)
    n = int(params.get("cells_in_series", 1))
    v = w.voltage / n
    soc0 = np.where(np.isfinite(soc_at_start), soc_at_start,
                    [soc_from_voltage(float(v[k, 0] + w.current[k, 0] * params["r0_ohm"])) for k in range(b)])
    theta = np.tile([params["capacity_ah"], params["r0_ohm"], params["r1_ohm"], params["c1_f"], 1.0], (b, 1))
    theta[:, 4] = np.clip(soc0, 0.02, 1.0)
    batch = cell_batch(theta, 0.0, w.temperature[:, 0])
    batch.ambient_c = w.ambient.astype(np.float64)
    dt = float(w.time_s[1] - w.time_s[0]) if len(w.time_s) > 1 else 1.0
    sim = simulate_cells(batch, w.current.copy(), dt, np.random.default_rng(0))
    mask = np.arange(w.current.shape[1])[None, :] < np.minimum(w.n_valid, sim.n_valid)[:, None]
    cnt = np.maximum(mask.sum(axis=1), 1)
    ev = np.sqrt((((sim.true_voltage_v - v) * 1000.0) ** 2 * mask).sum(axis=1) / cnt)
    et = np.sqrt(((sim.true_temperature_c - w.temperature) ** 2 * mask).sum(axis=1) / cnt)
    return ev, et
