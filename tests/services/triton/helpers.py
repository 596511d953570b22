"""Inputs built from a model's config.pbtxt and the in-process onnxruntime reference to compare Triton with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlstack.repository import config as cfgmod
from mlstack.repository.layout import versions

DEMO_MODELS = ["iris-svm", "iris-knn", "iris-rf", "iris-logreg", "diabetes-linear", "diabetes-rf",
               "digits-cnn", "digits-keras", "battery-fault", "battery-anomaly"]


def model_config(repo: Path, name: str) -> cfgmod.ModelConfig:
    return cfgmod.read_config(repo / name / "config.pbtxt")


def rows_for(repo: Path, name: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows of plausible data for every input, shaped as Triton expects (batch + dims)."""
    cfg = model_config(repo, name)
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in cfg.input:
        dims = [d if d > 0 else 1 for d in t.dims]
        dtype = np.dtype(cfgmod.numpy_dtype(t.data_type))
        feeds[t.name] = (rng.normal(size=[n, *dims]) if dtype.kind == "f" else rng.integers(0, 3, size=[n, *dims])).astype(dtype)
    return feeds


def reference(repo: Path, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the newest version's model.onnx run in-process, shaped like Triton's outputs (reshape -> dims)."""
    cfg = model_config(repo, name)
    version = max(versions(repo, name))
    sess = ort.InferenceSession(str(repo / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_feeds = {}
    for t in cfg.input:
        arr = feeds[t.name]
        if t.HasField("reshape"):
            arr = arr.reshape([arr.shape[0], *t.reshape.shape])
        onnx_feeds[t.name] = arr
    names = [t.name for t in cfg.output]
    outs = sess.run(names, onnx_feeds)
    result = {}
    for t, arr in zip(cfg.output, outs, strict=True):
        arr = np.asarray(arr)
        if all(d > 0 for d in t.dims):
            arr = arr.reshape([arr.shape[0], *t.dims])
        result[t.name] = arr.astype(cfgmod.numpy_dtype(t.data_type))
    return result


def assert_same(name: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want), f"{name}: outputs {sorted(got)} != {sorted(want)}"
    for key, w in want.items():
        g = got[key]
        assert g.shape == w.shape, f"{name}.{key}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"{name}.{key}: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{key}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}.{key}")
