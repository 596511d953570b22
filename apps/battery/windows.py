"""Cut a battery's telemetry into the windows the models were trained on and compute their features.

Windows are ``WINDOW_S`` (900 s) long from the first sample, resampled onto the training grid (1 s) by linear
interpolation; a window whose samples cover less than ``MIN_COVERAGE`` of it, or with a gap over ``MAX_GAP_S``, is
skipped (and counted). The features are ``training.battery_sim.feature_matrix``: the very code the models were fit on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apps.battery.store import Series
from training.battery_data import DT_S, WINDOW_S
from training.battery_sim import FEATURE_NAMES, feature_matrix

MIN_COVERAGE = 0.95
MAX_GAP_S = 60.0
MAX_WINDOWS = 2_500  # more than the 2M samples an analysis may read make at 1 Hz (2,222)


@dataclass
class Windows:
    start: np.ndarray  # [B] epoch seconds of each window's first grid point
    time_s: np.ndarray  # [T] grid offsets
    current: np.ndarray  # [B, T]
    voltage: np.ndarray
    temperature: np.ndarray
    n_valid: np.ndarray  # [B]
    ambient: np.ndarray  # [B]
    skipped: int

    @property
    def features(self) -> np.ndarray:
        return feature_matrix(self.time_s, self.current, self.voltage, self.temperature, self.n_valid, self.ambient)


def ambient_of(s: Series, window: slice, fallback: float | None) -> float:
    """The window's ambient: reported samples, else the battery's ``metadata.ambient_c``, else the coolest reading of the whole range."""
    amb = s.ambient[window]
    if np.isfinite(amb).any():
        return float(np.nanmean(amb))
    if fallback is not None:
        return fallback
    return float(np.nanpercentile(s.temperature, 1)) if len(s.temperature) else 25.0


def cut(s: Series, ambient_c: float | None = None, window_s: float = WINDOW_S, dt: float = DT_S) -> Windows:
    steps = round(window_s / dt)
    grid = np.arange(steps) * dt
    starts: list[float] = []
    nval: list[int] = []
    amb: list[float] = []
    cur: list[np.ndarray] = []
    vol: list[np.ndarray] = []
    tmp: list[np.ndarray] = []
    skipped = 0
    if len(s.ts):
        t0 = float(s.ts[0])
        n_win = min(int((float(s.ts[-1]) - t0) // window_s) + 1, MAX_WINDOWS)
        edges = np.searchsorted(s.ts, t0 + np.arange(n_win + 1) * window_s, side="left")
        for k in range(n_win):
            lo, hi = edges[k], edges[k + 1]
            ts = s.ts[lo:hi]
            start = t0 + k * window_s
            if len(ts) < 2 or (ts[-1] - start) < MIN_COVERAGE * (window_s - dt) or ts[0] - start > MAX_GAP_S or \
                    np.diff(ts).max() > MAX_GAP_S:
                skipped += 1
                continue
            at = start + grid
            n_valid = int(np.searchsorted(at, ts[-1], side="right"))
            starts.append(start)
            for out, ch in ((cur, s.current), (vol, s.voltage), (tmp, s.temperature)):
                out.append(np.interp(at, ts, ch[lo:hi]))
            nval.append(n_valid)
            amb.append(ambient_of(s, slice(lo, hi), ambient_c))
    b = len(starts)
    shape = (b, steps)
    return Windows(start=np.asarray(starts, dtype=np.float64), time_s=grid,
                   current=np.asarray(cur).reshape(shape), voltage=np.asarray(vol).reshape(shape),
                   temperature=np.asarray(tmp).reshape(shape), n_valid=np.asarray(nval, dtype=np.int64),
                   ambient=np.asarray(amb, dtype=np.float64), skipped=skipped)


__all__ = ["FEATURE_NAMES", "Windows", "cut"]
