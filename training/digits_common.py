"""Digits: the 8x8 handwritten digit images shared by the PyTorch and Keras recipes."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from mlstack.repository.card import Dataset, Metric, ModelCard, TensorSchema
from training.base import TrainResult

SEED = 42
THRESHOLD = 0.95
CLASSES = [str(d) for d in range(10)]
# What a client must do to an arbitrary image before sending it (BentoML's classify_image reads this).
PREPROCESSING = {
    "image": {"height": 8, "width": 8, "channels": 1, "polarity": "light_on_dark",
              "scale": "pixel / 255 for 8-bit images (load_digits pixels are 0..16, divided by 16)",
              "range": [0.0, 1.0], "resample": "area (box) downsampling to 8x8"},
}


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images scaled to [0, 1], shape [N, 8, 8]; stratified 25% hold-out."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(images, data.target, test_size=0.25, stratify=data.target,
                                              random_state=SEED)
    return x_tr, x_te, y_tr.astype(np.int64), y_te.astype(np.int64)


def digits_result(name: str, onnx_bytes: bytes, x_test: np.ndarray, y_test: np.ndarray, proba: np.ndarray, *,
                  layout: str, framework: str, algorithm: str, n_train: int, opset: int) -> TrainResult:
    """Card and parity inputs for a digits classifier whose input is ``x_test`` (already in the model's layout)."""
    pred = proba.argmax(axis=1).astype(np.int64)
    acc = float(accuracy_score(y_test, pred))
    card = ModelCard(
        name=name, task="classification", framework=framework, algorithm=algorithm,
        description=f"Handwritten digit (0-9) from an 8x8 grayscale image; {algorithm}.",
        dataset=Dataset(name="digits", source="sklearn.datasets.load_digits", n_train=n_train, n_test=len(x_test)),
        feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
        inputs=[TensorSchema(name="input", datatype="FP32", shape=[-1, *x_test.shape[1:]])],
        outputs=[TensorSchema(name="label", datatype="INT64", shape=[-1]),
                 TensorSchema(name="probabilities", datatype="FP32", shape=[-1, 10])],
        labels=CLASSES, preprocessing={**PREPROCESSING, "layout": layout},
        metrics={"accuracy": acc, "macro_f1": float(f1_score(y_test, pred, average="macro"))},
        headline_metric=Metric(name="accuracy", value=acc, threshold=THRESHOLD), opset=opset)
    return TrainResult(name=name, onnx_bytes=onnx_bytes, card=card, x_test=x_test,
                       native={"label": pred, "probabilities": proba.astype(np.float32)},
                       labels=CLASSES, label_output="probabilities")
