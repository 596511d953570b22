"""Diabetes progression: the shared split and packaging of the two regressors."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from mlstack.repository.card import Dataset
from training.base import Report, TrainResult
from training.sklearn_export import SEED, background_sample, regressor_result

# load_diabetes features are mean-centred and scaled by n_samples * std; the card says so.
PREPROCESSING = {"features": "sklearn load_diabetes scaling: each column mean-centred, scaled by std * sqrt(n_samples)"}


def train_diabetes(name: str, estimator: Any, algorithm: str, threshold: float, report: Report,
                   tolerance: float = 1e-4) -> TrainResult:
    """Fit on 80%, report R² / MAE on the 20% hold-out, and package for export."""
    data = load_diabetes()
    x_tr, x_te, y_tr, y_te = train_test_split(data.data.astype(np.float32), data.target.astype(np.float32),
                                              test_size=0.2, random_state=SEED)
    report(f"{name}: fitting {algorithm} on {len(x_tr)} rows")
    estimator.fit(x_tr, y_tr)
    result = regressor_result(
        name, estimator, x_te, y_te, feature_names=[str(f) for f in data.feature_names], algorithm=algorithm,
        description=f"Disease progression one year after baseline (diabetes dataset); {algorithm}.",
        dataset=Dataset(name="diabetes", source="sklearn.datasets.load_diabetes", n_train=len(x_tr), n_test=len(x_te)),
        threshold=threshold, tolerance=tolerance, extra_files={"background.npy": background_sample(x_tr)})
    result.card.preprocessing = PREPROCESSING
    report(f"{name}: held-out R² {result.card.metrics['r2']:.4f}, MAE {result.card.metrics['mae']:.2f}")
    return result
