"""Grid-search trials: each candidate scored by k-fold cross-validation, in parallel as Ray tasks or in this process."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

SEED = 42
FOLDS = 3


def grid(search: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the grid (one empty trial without a grid)."""
    if not search:
        return [{}]
    keys = sorted(search)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(search[k] for k in keys))]


def score_trial(estimator: Any, params: dict[str, Any], x: np.ndarray, y: np.ndarray, classification: bool) -> float:
    """Mean CV score (accuracy or R²) of ``estimator`` with ``params`` set on its ``model`` step."""
    est = clone(estimator).set_params(**{f"model__{k}": v for k, v in params.items()})
    folds = min(FOLDS, int(np.bincount(y).min())) if classification else FOLDS
    if folds < 2:  # too few rows per class for CV: score on the training data (still ranks the grid)
        return float(est.fit(x, y).score(x, y))
    cv = (StratifiedKFold if classification else KFold)(n_splits=folds, shuffle=True, random_state=SEED)
    return float(np.mean(cross_val_score(est, x, y, cv=cv, scoring="accuracy" if classification else "r2")))


def run_trials(estimator: Any, trials: list[dict[str, Any]], x: np.ndarray, y: np.ndarray, classification: bool, *,
               use_ray: bool, on_done: Callable[[int, int], None] | None = None) -> list[float]:
    """Scores in trial order. With ``use_ray`` every trial is a Ray task (1 CPU) over the shared arrays."""
    if not use_ray or len(trials) == 1:
        out = []
        for i, t in enumerate(trials):
            out.append(score_trial(estimator, t, x, y, classification))
            if on_done:
                on_done(i + 1, len(trials))
        return out
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(score_trial)
    xr, yr, er = ray.put(x), ray.put(y), ray.put(estimator)
    refs = [remote.remote(er, t, xr, yr, classification) for t in trials]
    index = {r: i for i, r in enumerate(refs)}
    scores: list[float] = [0.0] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            scores[index[r]] = float(ray.get(r))
        if on_done:
            on_done(len(refs) - len(pending), len(refs))
    return scores
