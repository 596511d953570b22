"""Shared plumbing for scikit-learn recipes: split, export with skl2onnx under our output names, fill the card."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

from mlstack.repository.card import Dataset, Metric, ModelCard, TensorSchema
from training.base import TrainResult

OPSET = 17
ML_OPSET = 3
SEED = 42


def rename_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Rename the graph outputs (in order) so every model follows the naming convention in training/base.py."""
    for out, new in zip(model.graph.output, names, strict=True):
        old = out.name
        for node in model.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]
        out.name = new
    return model


def to_onnx(estimator: Any, n_features: int, output_names: list[str], zipmap: bool | None = False) -> bytes:
    """skl2onnx export with a dynamic batch axis, input named ``input``; outputs renamed to ``output_names``."""
    options = {id(estimator): {"zipmap": zipmap}} if zipmap is not None else None
    onx = convert_sklearn(estimator, initial_types=[("input", FloatTensorType([None, n_features]))],
                          options=options, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    onx.graph.name = type(estimator).__name__  # skl2onnx picks a random uuid; a fixed name keeps exports byte-identical
    return rename_outputs(onx, output_names).SerializeToString()


def sklearn_framework() -> str:
    return f"scikit-learn {sklearn.__version__}"


def classifier_result(name: str, clf: Any, x_test: np.ndarray, y_test: np.ndarray, *, class_names: list[str],
                      feature_names: list[str], algorithm: str, description: str, dataset: Dataset,
                      threshold: float, preprocessing: dict[str, Any] | None = None) -> TrainResult:
    """Evaluate a fitted classifier (integer classes 0..C-1) and package its export as a TrainResult."""
    x_test = x_test.astype(np.float32)
    pred = clf.predict(x_test)
    proba = clf.predict_proba(x_test).astype(np.float32)
    acc = float(accuracy_score(y_test, pred))
    metrics = {"accuracy": acc, "macro_f1": float(f1_score(y_test, pred, average="macro"))}
    n_feat, n_cls = x_test.shape[1], len(class_names)
    card = ModelCard(
        name=name, task="classification", framework=sklearn_framework(), algorithm=algorithm, description=description,
        dataset=dataset, feature_names=feature_names,
        inputs=[TensorSchema(name="input", datatype="FP32", shape=[-1, n_feat])],
        outputs=[TensorSchema(name="label", datatype="INT64", shape=[-1]),
                 TensorSchema(name="probabilities", datatype="FP32", shape=[-1, n_cls])],
        labels=class_names, preprocessing=preprocessing or {}, metrics=metrics,
        headline_metric=Metric(name="accuracy", value=acc, threshold=threshold), opset=OPSET)
    return TrainResult(name=name, onnx_bytes=to_onnx(clf, n_feat, ["label", "probabilities"]), card=card,
                       x_test=x_test, native={"label": pred.astype(np.int64), "probabilities": proba},
                       labels=class_names, label_output="probabilities")


def regressor_result(name: str, reg: Any, x_test: np.ndarray, y_test: np.ndarray, *, feature_names: list[str],
                     algorithm: str, description: str, dataset: Dataset, threshold: float,
                     tolerance: float = 1e-4, extra_files: dict[str, bytes] | None = None) -> TrainResult:
    """Evaluate a fitted regressor and package its export (output ``value`` [N, 1]) as a TrainResult."""
    x_test = x_test.astype(np.float32)
    pred = reg.predict(x_test).astype(np.float32).reshape(-1, 1)
    r2 = float(r2_score(y_test, pred))
    metrics = {"r2": r2, "mae": float(mean_absolute_error(y_test, pred))}
    n_feat = x_test.shape[1]
    card = ModelCard(
        name=name, task="regression", framework=sklearn_framework(), algorithm=algorithm, description=description,
        dataset=dataset, feature_names=feature_names,
        inputs=[TensorSchema(name="input", datatype="FP32", shape=[-1, n_feat])],
        outputs=[TensorSchema(name="value", datatype="FP32", shape=[-1, 1])],
        metrics=metrics, headline_metric=Metric(name="r2", value=r2, threshold=threshold), opset=OPSET)
    return TrainResult(name=name, onnx_bytes=to_onnx(reg, n_feat, ["value"], zipmap=None), card=card, x_test=x_test,
                       native={"value": pred}, tolerance=tolerance, extra_files=extra_files or {})


def background_sample(x_train: np.ndarray, n: int = 50) -> bytes:
    """A seeded sample of training rows saved with the version (SHAP KernelExplainer's background)."""
    import io

    rng = np.random.default_rng(SEED)
    idx = rng.choice(len(x_train), size=min(n, len(x_train)), replace=False)
    buf = io.BytesIO()
    np.save(buf, x_train[np.sort(idx)].astype(np.float32))
    return buf.getvalue()
