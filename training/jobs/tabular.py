"""Tabular jobs: validate the table, split (seeded, stratified), fit imputation + scaling + estimator as ONE sklearn
pipeline (so the ONNX graph holds the preprocessing and clients send raw columns), grid search, export, metrics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from training.jobs.spec import JobInvalid, JobSpec

SEED = 42
MIN_ROWS = 10
MAX_PREVIEW = 20
MAX_CATEGORIES = 50
NUMERIC_SHARE = 0.95  # a column whose present values parse as numbers this often is numeric (the rest: missing)


@dataclass
class Prepared:
    """A validated table: float features (NaN = missing), target (class index or value), names and classes."""

    x: np.ndarray
    y: np.ndarray
    features: list[str]
    classes: list[str] | None
    dropped_rows: int
    categorical: dict[str, list[str]]  # text column -> its categories; the column holds the category's index (NaN: missing)

    def feature_types(self) -> list[dict[str, Any]]:
        return [{"name": f, "type": "category", "categories": self.categorical[f]} if f in self.categorical
                else {"name": f, "type": "number"} for f in self.features]


def estimator(spec: JobSpec, prep: Prepared | None = None) -> Any:
    """Preprocessing + the estimator for ``spec.algorithm`` / ``spec.task`` with the user's params (seeded).

    Numbers: median imputation, scaling (not for trees). Categories (their index in the table's column): one-hot with
    unknown and missing categories as all zeros — inside the pipeline, so inside the exported graph."""
    from sklearn import ensemble, linear_model, neighbors, neural_network, svm

    clf = spec.task == "classification"
    a = spec.algorithm
    if a == "svm":
        est: Any = svm.SVC(probability=True, random_state=SEED) if clf else svm.SVR()
    elif a == "knn":
        est = neighbors.KNeighborsClassifier() if clf else neighbors.KNeighborsRegressor()
    elif a == "random_forest":
        est = (ensemble.RandomForestClassifier if clf else ensemble.RandomForestRegressor)(
            n_estimators=50, random_state=SEED, n_jobs=1)
    elif a == "linear":
        est = linear_model.LinearRegression()
    elif a == "logistic":
        est = linear_model.LogisticRegression(max_iter=1000)
    elif a == "mlp":
        est = (neural_network.MLPClassifier if clf else neural_network.MLPRegressor)(
            hidden_layer_sizes=(32,), max_iter=500, random_state=SEED)
    else:
        raise JobInvalid(f"algorithm '{a}' is not a tabular algorithm", code="algorithm_data_mismatch")
    params = {k: v for k, v in spec.params.items() if k not in JOB_PARAMS}
    try:
        est.set_params(**params)
    except ValueError as exc:
        raise JobInvalid(f"invalid parameter for {a}: {exc}", code="invalid_params") from exc
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if a != "random_forest":  # trees need no scaling, and a float64 scaler could move rows across float32 thresholds
        steps.append(("scale", StandardScaler()))
    if prep is None or not prep.categorical:
        return Pipeline([*steps, ("model", est)])
    cat_idx = [i for i, f in enumerate(prep.features) if f in prep.categorical]
    num_idx = [i for i, f in enumerate(prep.features) if f not in prep.categorical]
    onehot = OneHotEncoder(categories=[np.arange(len(prep.categorical[prep.features[i]]), dtype=np.float64) for i in cat_idx],
                           handle_unknown="ignore", sparse_output=False)
    parts: list[tuple[str, Any, list[int]]] = [
        ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=-1.0)), ("onehot", onehot)]), cat_idx)]
    if num_idx:
        parts.insert(0, ("num", Pipeline(steps), num_idx))
    return Pipeline([("prep", ColumnTransformer(parts)), ("model", est)])


JOB_PARAMS = {"test_size", "min_metric", "max_rows", "epochs", "image_size"}


def prepare(spec: JobSpec, frame: pd.DataFrame) -> Prepared:
    """Refuse what cannot train (unknown target, one class, empty or text columns); coerce the rest to float."""
    if spec.target not in frame.columns:
        raise JobInvalid(f"unknown column '{spec.target}'", code="unknown_column",
                         details={"column": spec.target, "columns": [str(c) for c in frame.columns][:MAX_PREVIEW]})
    frame = frame.dropna(subset=[spec.target])
    dropped = 0
    features = [str(c) for c in frame.columns if c != spec.target]
    if not features:
        raise JobInvalid("the table has no feature columns besides the target", code="no_features")
    cols = {}
    categorical: dict[str, list[str]] = {}
    for c in frame.columns:
        if c == spec.target:
            continue
        present = frame[c].notna()
        if not present.any():
            raise JobInvalid(f"column '{c}' has no values (all missing)", code="empty_column", details={"column": str(c)})
        num = pd.to_numeric(frame[c], errors="coerce")
        if num[present].notna().mean() >= NUMERIC_SHARE:
            cols[str(c)] = num
            continue
        text = frame[c].map(lambda v: _label(v).strip() if v == v and v is not None else None)
        cats = sorted({v for v in text if isinstance(v, str) and v})
        if len(cats) > MAX_CATEGORIES:
            raise JobInvalid(f"column '{c}' has {len(cats)} distinct text values (at most {MAX_CATEGORIES} categories); "
                             "drop it or make it numeric", code="too_many_categories", details={"column": str(c)})
        index = {v: float(i) for i, v in enumerate(cats)}
        cols[str(c)] = text.map(index).astype(float)  # missing (None) and anything unmapped -> NaN
        categorical[str(c)] = cats
    # float32 from the start: what the ONNX graph computes with, so trees split on the same values natively.
    x = pd.DataFrame(cols).to_numpy(dtype=np.float32)
    if spec.params.get("max_rows"):
        rng = np.random.default_rng(SEED)
        keep = np.sort(rng.permutation(len(x))[: int(spec.params["max_rows"])])
        x, frame = x[keep], frame.iloc[keep]
    tgt = frame[spec.target]
    if len(x) < MIN_ROWS:
        raise JobInvalid(f"{len(x)} rows with a target value; at least {MIN_ROWS} are needed", code="too_few_rows")
    classes: list[str] | None = None
    if spec.task == "classification":
        labels = tgt.map(_label)
        classes = sorted(labels.unique().tolist())
        if len(classes) < 2:
            raise JobInvalid(f"target '{spec.target}' has one class ({classes[0]!r}); a classifier needs at least two",
                             code="one_class", details={"classes": classes})
        counts = labels.value_counts()
        if counts.min() < 2:
            raise JobInvalid(f"class {counts.idxmin()!r} has a single row; every class needs at least two",
                             code="class_too_small", details={"counts": {str(k): int(v) for k, v in counts.items()}})
        y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    else:
        num = pd.to_numeric(tgt, errors="coerce")
        if num.isna().any():
            raise JobInvalid(f"target '{spec.target}' is not numeric; regression needs numbers", code="target_not_numeric")
        y = num.to_numpy(dtype=np.float64)
    return Prepared(x=x, y=y, features=features, classes=classes, dropped_rows=dropped, categorical=categorical)


def _label(v: Any) -> str:
    """Class names as text; 1.0 and 1 name the same class."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def quiet() -> None:
    # SVC(probability=True) is deprecated in sklearn 1.9 but is what skl2onnx converts exactly (see training/iris_svm.py).
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
