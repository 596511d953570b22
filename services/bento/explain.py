"""SHAP attributions for tabular models, computed on the served ONNX model (through the runner).

The repository holds only ONNX graphs (decision 2 in DESIGN.md), so there is no native forest for
``shap.TreeExplainer``; every model is explained with ``shap.KernelExplainer`` on the model function with the
background sample stored in the version folder (``background.npy``). Kernel SHAP is model-agnostic and keeps
the efficiency property: contributions + base value equal the model output for the explained row. With few
features (2^F coalitions <= nsamples) it enumerates every coalition and so gives the exact Shapley values.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlstack.repository.card import ModelCard
from services.bento.errors import InvalidRecords, UnsupportedModel

logger = logging.getLogger(__name__)

MAX_EXPLAIN_RECORDS = 20
Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class Target:
    """Which scalar of the model's outputs is explained."""

    output: str
    column: int
    name: str


def load_background(version_dir: Path, card: ModelCard) -> np.ndarray:
    path = version_dir / "background.npy"
    if not path.is_file():
        raise UnsupportedModel(f"model '{card.name}' version {card.version} ships no background sample (background.npy); "
                               "it cannot be explained", details={"model": card.name, "version": card.version})
    bg = np.load(path, allow_pickle=False).astype(np.float32)
    if bg.ndim != 2 or bg.shape[1] != len(card.feature_names):
        raise UnsupportedModel(f"background.npy of '{card.name}' has shape {list(bg.shape)}, expected [n, {len(card.feature_names)}]")
    return bg


def target_for(card: ModelCard, outputs: dict[str, np.ndarray], row: int, target: str | None) -> Target:
    """Classifier: the probability of ``target`` (default: the predicted class); regressor: value; anomaly: score."""
    if card.task == "classification":
        labels = card.labels or []
        if target is None:
            k = int(outputs["label"].reshape(-1)[row])
        elif target in labels:
            k = labels.index(target)
        else:
            raise InvalidRecords(f"unknown target class '{target}'; one of {', '.join(labels)}",
                                 details={"target": target, "labels": labels})
        return Target("probabilities", k, f"probability of '{labels[k] if k < len(labels) else k}'")
    if card.task == "regression":
        return Target("value", 0, "value")
    return Target("scores", 0, "anomaly score (decision_function: lower = more anomalous)")


def explain_rows(predict: Predict, card: ModelCard, x: np.ndarray, background: np.ndarray, *, nsamples: int,
                 targets: list[Target]) -> list[dict[str, Any]]:
    """Kernel SHAP for each row of ``x``: contributions per feature, the base value and the explained output."""
    import shap

    out = []
    n_features = x.shape[1]
    # Every coalition when that is cheaper than sampling: exact Shapley values for small models.
    n_eval = min(nsamples, 2**n_features - 2) if n_features < 31 else nsamples
    for i, tgt in enumerate(targets):

        def f(z: np.ndarray, tgt: Target = tgt) -> np.ndarray:
            return predict(np.asarray(z, dtype=np.float32))[tgt.output].reshape(len(z), -1)[:, tgt.column].astype(np.float64)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer = shap.KernelExplainer(f, background, link="identity")
            phi = np.asarray(explainer.shap_values(x[i:i + 1], nsamples=n_eval, l1_reg=False, silent=True)).reshape(-1)
        base = float(np.asarray(explainer.expected_value).reshape(-1)[0])
        value = float(f(x[i:i + 1])[0])
        out.append({
            "explained_output": tgt.name,
            "output_value": value,
            "base_value": base,
            "contributions": {name: float(c) for name, c in zip(card.feature_names, phi, strict=True)},
            "additivity_error": abs(base + float(phi.sum()) - value),
        })
    return out
