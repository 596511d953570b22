"""A lithium-ion cell "digital twin": an equivalent-circuit model with injectable faults, plus a telemetry feature extractor.

Physics (one cell, positive current = discharge):

- Terminal voltage ``V = OCV(z) - I_cell·R0(T) - V1``. ``OCV(z)`` is a smooth NMC/graphite-like curve of the state of
  charge ``z`` (2.8 V empty, ~3.7 V half, 4.2 V full: a cubic plus an exponential knee near empty).
- ``R0(T) = R0_ref·exp(Ea/R·(1/T - 1/T_ref))`` (Arrhenius: a cold cell is more resistive); the RC pair scales alike.
- One RC pair models polarisation: ``dV1/dt = -V1/(R1·C1) + I_cell/C1``, integrated exactly for piecewise-constant current.
- Coulomb counting: ``dz/dt = -I_cell / (3600·Q)`` with capacity ``Q`` in Ah.
- Lumped thermal model: ``m·cp·dT/dt = I_cell²·R0 + V1²/R1 + V²/R_short + P_ext - hA·(T - T_amb)``, integrated exactly
  per step (heat held constant over the step).

Faults (``fault_severity`` in [0, 1]):

- ``internal_short``: a leakage resistance ``R_short`` (200 Ω at severity 0 down to 2 Ω at 1) across the terminals inside
  the cell; it drains charge even at zero load and heats the cell (``V²/R_short``).
- ``capacity_fade``: ageing: ``Q·(1 - 0.5·s)``, ``R0·(1 + 2·s)``, ``R1·(1 + s)``.
- ``sensor_drift``: the voltage and temperature sensors drift linearly in time (up to ±6 mV/min and ±0.6 °C/min,
  signs drawn from the seed); the true state is unchanged.
- ``overheating``: cooling failure: ``hA·(1 - 0.9·s)`` plus an external heat source of up to 3 W.

The run stops at the cut-off voltage (or an empty cell); SoC never goes negative. The core simulates many cells at
once as arrays (``simulate_cells``) so training sets are cheap; ``simulate`` is the validated single-cell API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlstack.errors import MlstackError

FaultKind = Literal["normal", "internal_short", "capacity_fade", "sensor_drift", "overheating"]
FAULT_KINDS: tuple[str, ...] = ("normal", "internal_short", "capacity_fade", "sensor_drift", "overheating")

KELVIN = 273.15
T_REF_K = 298.15
MAX_STEPS = 200_000
V_NOISE_V = 0.001
T_NOISE_C = 0.05


class SimulationInputError(MlstackError, ValueError):
    """Invalid simulation input; ``field`` names the offending parameter (422 with the usual JSON error body)."""

    code = "invalid_simulation_input"
    status = 422

    def __init__(self, field: str, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(f"{field}: {message}", details={"field": field, **(details or {})})
        self.field = field


class CellParams(BaseModel):
    """Parameters of one cell (an 18650-like 3 Ah NMC cell by default) and its surroundings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity_ah: float = Field(3.0, gt=0.05, le=500, description="Nominal capacity Q (Ah).")
    r0_ohm: float = Field(0.030, gt=0, le=1.0, description="Series resistance at 25 °C (Ω).")
    r1_ohm: float = Field(0.015, gt=0, le=1.0, description="Polarisation resistance of the RC pair at 25 °C (Ω).")
    c1_f: float = Field(2500.0, gt=0, le=1e6, description="Polarisation capacitance of the RC pair (F).")
    activation_k: float = Field(2400.0, ge=0, le=10_000, description="Arrhenius Ea/R for R0 and R1 (K).")
    heat_capacity_j_per_k: float = Field(45.0, gt=0, le=1e6, description="Lumped m·cp (J/K).")
    h_a_w_per_k: float = Field(0.05, gt=0, le=1e3, description="Convective cooling hA to ambient (W/K).")
    ambient_c: float = Field(25.0, ge=-40, le=80, description="Ambient temperature (°C).")
    initial_temperature_c: float | None = Field(None, ge=-40, le=120, description="Start temperature; ambient when unset.")
    initial_soc: float = Field(1.0, ge=0, le=1, description="State of charge at t=0 (0..1).")
    v_cutoff: float = Field(3.0, ge=2.0, le=3.6, description="Discharge cut-off voltage; the run stops below it (V).")

    @model_validator(mode="after")
    def _check_soc(self) -> CellParams:
        if self.initial_soc <= 0:
            raise ValueError("initial_soc must be > 0: an empty cell cannot be simulated")
        return self


class LoadProfile(BaseModel):
    """Piecewise-constant current: ``currents_a[i]`` flows for ``durations_s[i]`` seconds (positive = discharge)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    durations_s: list[float] = Field(min_length=1, max_length=100_000)
    currents_a: list[float] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _check(self) -> LoadProfile:
        if len(self.durations_s) != len(self.currents_a):
            raise ValueError(f"durations_s and currents_a differ in length ({len(self.durations_s)} vs {len(self.currents_a)})")
        if any(not (math.isfinite(d) and d > 0) for d in self.durations_s):
            raise ValueError("durations_s must be finite and > 0")
        if any(not (math.isfinite(c) and abs(c) <= 1000) for c in self.currents_a):
            raise ValueError("currents_a must be finite and within ±1000 A")
        return self

    @property
    def duration_s(self) -> float:
        return float(sum(self.durations_s))

    def sample(self, dt: float, n: int | None = None) -> np.ndarray:
        """Current at t = 0, dt, 2·dt, ... (``n`` samples; by default the whole profile)."""
        n = n if n is not None else max(1, round(self.duration_s / dt))
        edges = np.cumsum(np.asarray(self.durations_s, dtype=np.float64))
        idx = np.searchsorted(edges, np.arange(n) * dt + 1e-9, side="right")
        cur = np.asarray([*self.currents_a, 0.0], dtype=np.float64)
        return cur[np.minimum(idx, len(self.currents_a))]

    @classmethod
    def constant(cls, current_a: float, duration_s: float, rest_s: float = 0.0) -> LoadProfile:
        """A constant load, optionally followed by a rest."""
        durs, curs = [duration_s], [current_a]
        if rest_s > 0:
            durs.append(rest_s)
            curs.append(0.0)
        return cls(durations_s=durs, currents_a=curs)

    @classmethod
    def pulses(cls, current_a: float, on_s: float, off_s: float, n_pulses: int, rest_s: float = 0.0) -> LoadProfile:
        """HPPC-like pulse train: ``n_pulses`` × (``on_s`` at ``current_a``, ``off_s`` at rest), then a rest."""
        durs: list[float] = []
        curs: list[float] = []
        for _ in range(n_pulses):
            durs += [on_s, off_s]
            curs += [current_a, 0.0]
        if rest_s > 0:
            durs.append(rest_s)
            curs.append(0.0)
        return cls(durations_s=durs, currents_a=curs)

    @classmethod
    def drive_cycle(cls, duration_s: float, mean_current_a: float, seed: int = 0, rest_s: float = 0.0) -> LoadProfile:
        """A seeded urban drive-cycle-like load: accelerations, cruising, regenerative braking (negative) and stops."""
        rng = np.random.default_rng(seed)
        # phase -> current as a multiple of the mean: accelerate, cruise, regen brake, stop
        levels = np.array([2.6, 1.0, -0.6, 0.0])
        cum_p = np.cumsum([0.25, 0.4, 0.15, 0.2])
        n_max = int(duration_s // 5) + 1  # segments last 5-40 s: draw enough at once, keep those inside the window
        phase = np.minimum(np.searchsorted(cum_p, rng.random(n_max), side="right"), 3)
        seg = rng.uniform(5, 40, n_max)
        jitter = np.where(phase == 3, 0.0, 1.0 + 0.2 * rng.standard_normal(n_max))
        start = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
        keep = start < duration_s
        durs = np.minimum(seg, duration_s - start)[keep].tolist()
        curs = (mean_current_a * levels[phase] * jitter)[keep].tolist()
        if rest_s > 0:
            durs.append(rest_s)
            curs.append(0.0)
        return cls(durations_s=durs, currents_a=curs)


_M = TypeVar("_M", bound=BaseModel)


def parse(model: type[_M], data: Mapping[str, Any]) -> _M:
    """Validate ``data`` into ``CellParams``/``LoadProfile``; any problem -> SimulationInputError naming the first field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        first = errors[0]
        field = ".".join(str(p) for p in first["loc"]) or model.__name__
        raise SimulationInputError(field, first["msg"], details={"errors": errors}) from None


def ocv(soc: np.ndarray) -> np.ndarray:
    """Open-circuit voltage (V) of state of charge 0..1: 2.8 V empty, ~3.69 V half, 4.2 V full, strictly increasing."""
    z = np.clip(soc, 0.0, 1.0)
    return 3.4 + 0.65 * z - 0.4 * z**2 + 0.55 * z**3 - 0.6 * np.exp(-z / 0.035)


@dataclass
class CellArrays:
    """Per-cell parameters of a batch (each an array of shape [B]), faults already applied."""

    capacity_ah: np.ndarray
    r0_ohm: np.ndarray
    r1_ohm: np.ndarray
    c1_f: np.ndarray
    activation_k: np.ndarray
    heat_capacity_j_per_k: np.ndarray
    h_a_w_per_k: np.ndarray
    ambient_c: np.ndarray
    initial_temperature_c: np.ndarray
    initial_soc: np.ndarray
    v_cutoff: np.ndarray
    r_short_ohm: np.ndarray  # inf = no short
    p_ext_w: np.ndarray
    v_drift_v_per_s: np.ndarray
    t_drift_c_per_s: np.ndarray

    @classmethod
    def from_params(cls, p: CellParams) -> CellArrays:
        one = np.ones(1)
        t0 = p.ambient_c if p.initial_temperature_c is None else p.initial_temperature_c
        return cls(capacity_ah=one * p.capacity_ah, r0_ohm=one * p.r0_ohm, r1_ohm=one * p.r1_ohm, c1_f=one * p.c1_f,
                   activation_k=one * p.activation_k, heat_capacity_j_per_k=one * p.heat_capacity_j_per_k,
                   h_a_w_per_k=one * p.h_a_w_per_k, ambient_c=one * p.ambient_c, initial_temperature_c=one * t0,
                   initial_soc=one * p.initial_soc, v_cutoff=one * p.v_cutoff, r_short_ohm=one * np.inf,
                   p_ext_w=one * 0.0, v_drift_v_per_s=one * 0.0, t_drift_c_per_s=one * 0.0)

    def with_fault(self, fault: np.ndarray, severity: np.ndarray, rng: np.random.Generator) -> CellArrays:
        """Apply a fault kind (array of names, shape [B]) at the given severities (0..1); returns a new batch."""
        s = np.clip(np.asarray(severity, dtype=np.float64), 0.0, 1.0)
        fault = np.asarray(fault)
        short, fade, drift, hot = (fault == k for k in ("internal_short", "capacity_fade", "sensor_drift", "overheating"))
        signs = rng.choice([-1.0, 1.0], size=(2, len(s)))
        return CellArrays(
            capacity_ah=self.capacity_ah * np.where(fade, 1 - 0.5 * s, 1.0),
            r0_ohm=self.r0_ohm * np.where(fade, 1 + 2.0 * s, 1.0),
            r1_ohm=self.r1_ohm * np.where(fade, 1 + s, 1.0),
            c1_f=self.c1_f, activation_k=self.activation_k, heat_capacity_j_per_k=self.heat_capacity_j_per_k,
            h_a_w_per_k=self.h_a_w_per_k * np.where(hot, 1 - 0.9 * s, 1.0),
            ambient_c=self.ambient_c, initial_temperature_c=self.initial_temperature_c, initial_soc=self.initial_soc,
            v_cutoff=self.v_cutoff,
            r_short_ohm=np.where(short, 10.0 ** (2.3 - 2.0 * s), self.r_short_ohm),
            p_ext_w=self.p_ext_w + np.where(hot, 3.0 * s, 0.0),
            v_drift_v_per_s=self.v_drift_v_per_s + np.where(drift, signs[0] * s * 0.006 / 60, 0.0),
            t_drift_c_per_s=self.t_drift_c_per_s + np.where(drift, signs[1] * s * 0.6 / 60, 0.0),
        )


@dataclass
class BatchTelemetry:
    """Telemetry of B cells over T steps (arrays [B, T]); samples at index >= ``n_valid[b]`` are after the stop."""

    time_s: np.ndarray  # [T]
    current_a: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    soc: np.ndarray
    true_voltage_v: np.ndarray
    true_temperature_c: np.ndarray
    n_valid: np.ndarray  # [B]
    cutoff_reached: np.ndarray  # [B] bool
    ambient_c: np.ndarray  # [B]


def simulate_cells(cells: CellArrays, current: np.ndarray, dt: float, rng: np.random.Generator) -> BatchTelemetry:
    """Step B cells at once through the load ``current`` ([B, T], A); each cell stops at its cut-off."""
    b, n = current.shape
    soc = cells.initial_soc.astype(np.float64).copy()
    v1 = np.zeros(b)
    temp = cells.initial_temperature_c.astype(np.float64).copy()
    alive = np.ones(b, dtype=bool)
    n_valid = np.full(b, n, dtype=np.int64)
    cutoff = np.zeros(b, dtype=bool)
    out = {k: np.zeros((b, n)) for k in ("i", "v", "t", "z")}
    g_short = 1.0 / cells.r_short_ohm  # 0 when there is no short
    for k in range(n):
        arr = np.exp(cells.activation_k * (1.0 / (temp + KELVIN) - 1.0 / T_REF_K))
        r0 = cells.r0_ohm * arr
        r1 = cells.r1_ohm * arr
        i_load = np.where(alive, current[:, k], 0.0)
        # short across the terminals: V = (OCV - V1 - I·R0) / (1 + R0/R_short), the cell supplies I + V/R_short
        v = (ocv(soc) - v1 - i_load * r0) / (1.0 + r0 * g_short)
        stop = alive & ((v < cells.v_cutoff) | (soc <= 0.0))
        n_valid[stop] = k + 1
        cutoff |= stop
        out["i"][:, k], out["v"][:, k], out["t"][:, k], out["z"][:, k] = i_load, v, temp, soc
        alive &= ~stop
        i_cell = np.where(alive, i_load + v * g_short, 0.0)
        tau = r1 * cells.c1_f
        decay = np.exp(-dt / tau)
        heat = i_cell**2 * r0 + v1**2 / r1 + np.where(alive, v**2 * g_short, 0.0) + cells.p_ext_w
        t_inf = cells.ambient_c + heat / cells.h_a_w_per_k
        temp = t_inf + (temp - t_inf) * np.exp(-dt * cells.h_a_w_per_k / cells.heat_capacity_j_per_k)
        v1 = v1 * decay + r1 * (1.0 - decay) * i_cell
        soc = np.clip(soc - i_cell * dt / (3600.0 * cells.capacity_ah), 0.0, 1.0)
        if not alive.any():
            break
    time_s = np.arange(n) * dt
    v_meas = out["v"] + cells.v_drift_v_per_s[:, None] * time_s + rng.normal(0.0, V_NOISE_V, (b, n))
    t_meas = out["t"] + cells.t_drift_c_per_s[:, None] * time_s + rng.normal(0.0, T_NOISE_C, (b, n))
    return BatchTelemetry(time_s=time_s, current_a=out["i"], voltage_v=v_meas, temperature_c=t_meas, soc=out["z"],
                          true_voltage_v=out["v"], true_temperature_c=out["t"], n_valid=n_valid, cutoff_reached=cutoff,
                          ambient_c=cells.ambient_c.copy())


@dataclass(frozen=True)
class Telemetry:
    """One simulated run: measured channels (``voltage_v``, ``temperature_c``) plus the true state."""

    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    soc: np.ndarray
    true_voltage_v: np.ndarray
    true_temperature_c: np.ndarray
    ambient_c: float
    cutoff_reached: bool
    fault: str
    fault_severity: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (lists of floats)."""
        arrays = ("time_s", "current_a", "voltage_v", "temperature_c", "soc", "true_voltage_v", "true_temperature_c")
        out: dict[str, object] = {k: np.round(getattr(self, k), 6).tolist() for k in arrays}
        out.update(ambient_c=self.ambient_c, cutoff_reached=self.cutoff_reached, fault=self.fault,
                   fault_severity=self.fault_severity)
        return out


def simulate(params: CellParams, profile: LoadProfile, dt: float = 1.0, fault: str | None = None,
             fault_severity: float = 0.5, seed: int = 0) -> Telemetry:
    """Simulate one cell through ``profile``; stops early at the cut-off voltage. Bad input -> SimulationInputError."""
    if not isinstance(params, CellParams):
        raise SimulationInputError("params", "must be a CellParams")
    if not isinstance(profile, LoadProfile):
        raise SimulationInputError("profile", "must be a LoadProfile")
    if not (isinstance(dt, int | float) and math.isfinite(dt) and 0.01 <= dt <= 60):
        raise SimulationInputError("dt", f"must be between 0.01 and 60 seconds, got {dt!r}")
    kind = fault or "normal"
    if kind not in FAULT_KINDS:
        raise SimulationInputError("fault", f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
    if not (isinstance(fault_severity, int | float) and 0.0 <= fault_severity <= 1.0):
        raise SimulationInputError("fault_severity", f"must be within [0, 1], got {fault_severity!r}")
    n = max(1, round(profile.duration_s / dt))
    if n > MAX_STEPS:
        raise SimulationInputError("dt", f"profile of {profile.duration_s:g} s at dt={dt:g} is {n} steps; the limit is {MAX_STEPS}")
    rng = np.random.default_rng(seed)
    cells = CellArrays.from_params(params).with_fault(np.array([kind]), np.array([fault_severity]), rng)
    bt = simulate_cells(cells, profile.sample(dt, n)[None, :], dt, rng)
    m = int(bt.n_valid[0])
    return Telemetry(time_s=bt.time_s[:m], current_a=bt.current_a[0, :m], voltage_v=bt.voltage_v[0, :m],
                     temperature_c=bt.temperature_c[0, :m], soc=bt.soc[0, :m], true_voltage_v=bt.true_voltage_v[0, :m],
                     true_temperature_c=bt.true_temperature_c[0, :m], ambient_c=params.ambient_c,
                     cutoff_reached=bool(bt.cutoff_reached[0]), fault=kind, fault_severity=float(fault_severity))


FEATURE_NAMES: tuple[str, ...] = (
    "duration_s",  # length of the window (shorter when the cut-off ended it)
    "ambient_c",  # ambient temperature reported by the pack
    "i_mean_a",
    "i_rms_a",
    "ah_discharged",  # net charge drawn (coulomb count of the measured current)
    "v_start_v",
    "v_end_v",
    "v_mean_v",
    "v_min_v",
    "v_max_v",
    "r_step_mohm",  # internal resistance estimate: median -ΔV/ΔI over current steps
    "dvdq_v_per_ah",  # slope of the IR-compensated voltage against charge drawn (steeper for a faded cell)
    "joule_heat_kj",  # Σ I²·R_est·dt: heat the load alone explains
    "rest_relax_mv",  # voltage recovery over the final rest
    "rest_slope_mv_min",  # voltage slope over the late half of the final rest (relaxation vs. self-discharge)
    "t_max_rise_c",  # max temperature above ambient
    "t_min_rise_c",  # min temperature above ambient (negative: reads colder than its surroundings)
    "t_end_rise_c",
    "t_slope_c_min",  # temperature trend over the window
    "t_rest_slope_c_min",  # temperature trend over the final rest (cooling vs. heating at zero load)
)
REST_CURRENT_A = 0.01
STEP_CURRENT_A = 0.1
MIN_REST_SAMPLES = 10


def _slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x per row over the mask w ([B, T]); 0 where fewer than 3 points."""
    cnt = w.sum(axis=1)
    safe = np.maximum(cnt, 1)
    xm = (x * w).sum(axis=1) / safe
    ym = (y * w).sum(axis=1) / safe
    dx = (x - xm[:, None]) * w
    sxx = (dx**2).sum(axis=1)
    sxy = (dx * (y - ym[:, None])).sum(axis=1)
    return np.where((cnt >= 3) & (sxx > 0), sxy / np.where(sxx > 0, sxx, 1.0), 0.0)


def feature_matrix(time_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray, temperature_c: np.ndarray,
                   n_valid: np.ndarray, ambient_c: np.ndarray) -> np.ndarray:
    """Telemetry windows ([B, T], uniformly sampled at ``time_s``, valid up to ``n_valid``) -> features [B, F] float32."""
    b, n = current_a.shape
    dt = float(time_s[1] - time_s[0]) if n > 1 else 1.0
    idx = np.arange(n)
    m = (idx[None, :] < n_valid[:, None]).astype(np.float64)
    cnt = np.maximum(m.sum(axis=1), 1)
    rows = np.arange(b)
    last = np.maximum(n_valid - 1, 0)
    i, v, t = current_a * m, voltage_v * m, temperature_c * m

    def mean(x: np.ndarray) -> np.ndarray:
        return (x * m).sum(axis=1) / cnt

    v_min = np.where(m > 0, voltage_v, np.inf).min(axis=1)
    v_max = np.where(m > 0, voltage_v, -np.inf).max(axis=1)
    t_min = np.where(m > 0, temperature_c, np.inf).min(axis=1)
    t_max = np.where(m > 0, temperature_c, -np.inf).max(axis=1)
    # resistance from the instantaneous voltage response to current steps (the RC pair cannot follow a step)
    d_i = np.diff(i, axis=1)
    d_v = np.diff(v, axis=1)
    step = (np.abs(d_i) > STEP_CURRENT_A) & (m[:, 1:] > 0)
    r_ev = np.where(step, -d_v / np.where(step, d_i, 1.0), np.nan)
    has_step = step.any(axis=1)
    r_est = np.zeros(b)
    if has_step.any():
        r_est[has_step] = np.nanmedian(r_ev[has_step], axis=1)
    ah = np.cumsum(i, axis=1) * dt / 3600.0
    v_comp = voltage_v + current_a * r_est[:, None]
    dvdq = _slope(ah, v_comp, m)
    # final rest: every valid sample after the last loaded one
    loaded = (np.abs(current_a) > REST_CURRENT_A) & (m > 0)
    last_load = np.where(loaded.any(axis=1), n - 1 - np.argmax(loaded[:, ::-1], axis=1), -1)
    rest = (idx[None, :] > last_load[:, None]) & (m > 0)
    n_rest = rest.sum(axis=1)
    has_rest = n_rest >= MIN_REST_SAMPLES
    first_rest = np.minimum(last_load + 1, n - 1)
    late_rest = rest & (idx[None, :] >= (first_rest + n_rest // 2)[:, None])
    tmin = time_s[None, :] / 60.0
    feats = {
        "duration_s": n_valid * dt,
        "ambient_c": ambient_c,
        "i_mean_a": mean(i),
        "i_rms_a": np.sqrt(mean(i**2)),
        "ah_discharged": ah[rows, last],
        "v_start_v": voltage_v[:, 0],
        "v_end_v": voltage_v[rows, last],
        "v_mean_v": mean(v),
        "v_min_v": v_min,
        "v_max_v": v_max,
        "r_step_mohm": r_est * 1000.0,
        "dvdq_v_per_ah": dvdq,
        "joule_heat_kj": (i**2).sum(axis=1) * r_est * dt / 1000.0,
        "rest_relax_mv": np.where(has_rest, (voltage_v[rows, last] - voltage_v[rows, first_rest]) * 1000.0, 0.0),
        "rest_slope_mv_min": np.where(has_rest, _slope(np.broadcast_to(tmin, (b, n)), voltage_v * 1000.0, late_rest), 0.0),
        "t_max_rise_c": t_max - ambient_c,
        "t_min_rise_c": t_min - ambient_c,
        "t_end_rise_c": temperature_c[rows, last] - ambient_c,
        "t_slope_c_min": _slope(np.broadcast_to(tmin, (b, n)), t, m),
        "t_rest_slope_c_min": np.where(has_rest, _slope(np.broadcast_to(tmin, (b, n)), temperature_c, rest), 0.0),
    }
    return np.stack([feats[k] for k in FEATURE_NAMES], axis=1).astype(np.float32)


def extract_features(tel: Telemetry) -> np.ndarray:
    """One telemetry window -> its feature vector (float32, ordered as FEATURE_NAMES)."""
    return batch_features(
        BatchTelemetry(time_s=tel.time_s, current_a=tel.current_a[None], voltage_v=tel.voltage_v[None],
                       temperature_c=tel.temperature_c[None], soc=tel.soc[None], true_voltage_v=tel.true_voltage_v[None],
                       true_temperature_c=tel.true_temperature_c[None], n_valid=np.array([len(tel.time_s)]),
                       cutoff_reached=np.array([tel.cutoff_reached]), ambient_c=np.array([tel.ambient_c])))[0]


def batch_features(bt: BatchTelemetry) -> np.ndarray:
    """Features [B, F] of a simulated batch."""
    return feature_matrix(bt.time_s, bt.current_a, bt.voltage_v, bt.temperature_c, bt.n_valid, bt.ambient_c)
