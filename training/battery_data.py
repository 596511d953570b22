"""Seeded training data for the battery recipes: simulated telemetry windows -> features (X) and fault class (y).

Every window is one cell from a manufacturing spread (capacity, resistances, thermal mass, cooling), at a random
ambient temperature and start SoC, driven by a constant, pulsed or drive-cycle load followed by a rest, with a fault
of random severity (or none). All cells of the set are simulated at once as arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from training.battery_sim import FAULT_KINDS, FEATURE_NAMES, CellArrays, LoadProfile, batch_features, simulate_cells

logger = logging.getLogger(__name__)

SOURCE = "training.battery_data"
PROFILE_KINDS = ("constant", "pulses", "drive")
DEFAULT_N_PER_CLASS = 600
WINDOW_S = 900
DT_S = 1.0
# Faults milder than this are mostly indistinguishable from manufacturing spread in a 15-minute window.
MIN_SEVERITY = 0.3


@dataclass(frozen=True)
class BatteryDataset:
    x: np.ndarray  # [N, F] float32, columns = FEATURE_NAMES
    y: np.ndarray  # [N] int64 index into classes
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    severity: np.ndarray  # [N] 0 for normal
    profile_kind: np.ndarray  # [N] names from PROFILE_KINDS


def _spread(rng: np.random.Generator, n: int, mean: float, rel_sd: float) -> np.ndarray:
    return mean * np.clip(1.0 + rel_sd * rng.standard_normal(n), 0.5, 1.5)


def random_cells(rng: np.random.Generator, n: int) -> CellArrays:
    """``n`` healthy cells around an 18650-like 3 Ah NMC cell, with manufacturing and ageing spread."""
    ambient = rng.uniform(0.0, 40.0, n)
    return CellArrays(
        capacity_ah=_spread(rng, n, 3.0, 0.03), r0_ohm=_spread(rng, n, 0.030, 0.08), r1_ohm=_spread(rng, n, 0.015, 0.10),
        c1_f=_spread(rng, n, 2500.0, 0.10), activation_k=_spread(rng, n, 2400.0, 0.05),
        heat_capacity_j_per_k=_spread(rng, n, 45.0, 0.05), h_a_w_per_k=_spread(rng, n, 0.05, 0.10), ambient_c=ambient,
        initial_temperature_c=ambient + rng.normal(0.0, 0.3, n), initial_soc=rng.uniform(0.55, 1.0, n),
        v_cutoff=np.full(n, 3.0), r_short_ohm=np.full(n, np.inf), p_ext_w=np.zeros(n), v_drift_v_per_s=np.zeros(n),
        t_drift_c_per_s=np.zeros(n))


def random_profile(rng: np.random.Generator, kind: str, capacity_ah: float, window_s: float) -> LoadProfile:
    """A load of ``kind`` for most of the window, then a rest to its end (C-rates relative to ``capacity_ah``)."""
    load_s = float(rng.uniform(0.5, 0.75) * window_s)
    rest_s = window_s - load_s
    if kind == "constant":
        return LoadProfile.constant(float(rng.uniform(0.3, 1.5) * capacity_ah), load_s, rest_s)
    if kind == "pulses":
        on, off = float(rng.uniform(10, 60)), float(rng.uniform(10, 60))
        n = max(1, int(load_s // (on + off)))
        return LoadProfile.pulses(float(rng.uniform(0.5, 2.0) * capacity_ah), on, off, n, window_s - n * (on + off))
    return LoadProfile.drive_cycle(load_s, float(rng.uniform(0.3, 0.9) * capacity_ah), int(rng.integers(2**31)), rest_s)


@lru_cache(maxsize=2)
def training_set(seed: int) -> BatteryDataset:
    """The recipes' data set (cached: battery-fault and battery-anomaly share it within one process)."""
    return generate(DEFAULT_N_PER_CLASS, seed)


def generate(n_per_class: int = DEFAULT_N_PER_CLASS, seed: int = 0, window_s: float = WINDOW_S,
             dt: float = DT_S) -> BatteryDataset:
    """Simulate ``n_per_class`` windows of each fault kind (normal included); same seed -> identical data."""
    rng = np.random.default_rng(seed)
    n_cls = len(FAULT_KINDS)
    n = n_per_class * n_cls
    y = np.repeat(np.arange(n_cls, dtype=np.int64), n_per_class)
    fault = np.asarray(FAULT_KINDS)[y]
    severity = np.where(y == 0, 0.0, rng.uniform(MIN_SEVERITY, 1.0, n))
    cells = random_cells(rng, n).with_fault(fault, severity, rng)
    kinds = np.asarray(PROFILE_KINDS)[rng.integers(len(PROFILE_KINDS), size=n)]
    steps = round(window_s / dt)
    # profiles are sized by the nominal (pre-fade) capacity: the load does not know the cell has aged
    nominal = cells.capacity_ah / np.where(fault == "capacity_fade", 1 - 0.5 * severity, 1.0)
    current = np.stack([random_profile(rng, str(k), float(q), window_s).sample(dt, steps) for k, q in zip(kinds, nominal,
                                                                                                        strict=True)])
    bt = simulate_cells(cells, current, dt, rng)
    x = batch_features(bt)
    logger.info("battery data: %d windows x %d features, %d hit the cut-off", n, x.shape[1], int(bt.cutoff_reached.sum()))
    for arr in (x, y, severity, kinds):
        arr.setflags(write=False)
    return BatteryDataset(x=x, y=y, classes=FAULT_KINDS, feature_names=FEATURE_NAMES, severity=severity,
                          profile_kind=kinds)
