"""SHAP attributions for tabular models, computed on the served ONNX model (through the runner).

The repository holds only ONNX graphs (decision 2 in DESIGN.md), so there is no native forest for
``shap.TreeExplainer``; every model is explained with ``shap.KernelExplainer`` on the model function with the
background sample stored in the version folder (``background.npy``, or one derived row when a version has none).
LIME (``method: "lime"``) fits a local linear surrogate around each row instead. Kernel SHAP is model-agnostic and keeps
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


def load_background(version_dir: Path, card: ModelCard) -> tuple[np.ndarray, str]:
    """The background sample and where it came from: ``uploaded`` (with the version), ``derived:...`` otherwise.

    A version without ``background.npy`` (an upload that sent none and had nothing to inherit) is explained against
    one all-zeros row: Shapley values then attribute the output's distance from the model's answer at the origin.
    """
    n = len(card.feature_names)
    path = version_dir / "background.npy"
    if not path.is_file():
        return np.zeros((1, n), dtype=np.float32), "derived:zeros"
    bg = np.load(path, allow_pickle=False).astype(np.float32)
    if bg.ndim != 2 or bg.shape[1] != n:
        raise UnsupportedModel(f"background.npy of '{card.name}' has shape {list(bg.shape)}, expected [n, {n}]")
    source = card.background or "training-sample"
    return bg, source if source == "uploaded" else f"derived:{source}"


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


def explain_rows_lime(predict: Predict, card: ModelCard, x: np.ndarray, background: np.ndarray, *, nsamples: int,
                      targets: list[Target], seed: int = 0) -> list[dict[str, Any]]:
    """LIME per row: weights of a local linear model fitted on perturbed samples around the row (lime's tabular explainer).

    Features are perturbed with the background's mean and spread (unit spread where a feature does not vary);
    ``local_prediction`` is the surrogate's answer at the row and ``fit_r2`` how well it follows the model there.
    """
    from lime.lime_tabular import LimeTabularExplainer

    out = []
    for i, tgt in enumerate(targets):

        def f(z: np.ndarray, tgt: Target = tgt) -> np.ndarray:
            return predict(np.asarray(z, dtype=np.float32))[tgt.output].reshape(len(z), -1)[:, tgt.column].astype(np.float64)

        explainer = LimeTabularExplainer(background.astype(np.float64), mode="regression", feature_names=card.feature_names,
                                         discretize_continuous=False, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = explainer.explain_instance(x[i].astype(np.float64), f, num_features=x.shape[1], num_samples=nsamples)
        weights = dict(exp.as_map()[1])  # regression mode keys the fitted output as 1
        out.append({
            "explained_output": tgt.name,
            "output_value": float(f(x[i:i + 1])[0]),
            "intercept": float(exp.intercept[1]),
            "local_prediction": float(np.asarray(exp.local_pred).reshape(-1)[0]),
            "fit_r2": float(exp.score),
            "contributions": {name: float(weights.get(j, 0.0)) for j, name in enumerate(card.feature_names)},
        })
    return out
