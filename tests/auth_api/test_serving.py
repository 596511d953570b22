"""Promote / roll back / delete rewrite what Triton serves, atomically, and refuse to delete the live version."""

from __future__ import annotations

from pathlib import Path

import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlstack.errors import ModelNotFound
from mlstack.repository import config as cfgmod
from mlstack.repository.card import Dataset, ModelCard
from mlstack.repository.layout import versions
from mlstack.repository.publish import Candidate, publish
from mlstack.repository.serving import NoPreviousVersion, VersionIsLive, delete_version, live_version, promote, rollback

LABELS = ["setosa", "versicolor", "virginica"]


def iris_onnx(c: float = 1.0) -> bytes:
    """A small classifier following the project's output naming (label, probabilities)."""
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500, C=c).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    for out, new in zip(onx.graph.output, ("label", "probabilities"), strict=True):
        for node in onx.graph.node:
            node.output[:] = [new if o == out.name else o for o in node.output]
        out.name = new
    return onx.SerializeToString()


def iris_card(name: str) -> ModelCard:
    return ModelCard(name=name, task="classification", framework="scikit-learn", algorithm="logreg",
                     dataset=Dataset(name="iris", source="sklearn.datasets.load_iris"), labels=LABELS,
                     feature_names=["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"])


def publish_iris(repo: Path, name: str, c: float = 1.0) -> int:
    cand = Candidate(name=name, onnx_bytes=iris_onnx(c), card=iris_card(name), labels=LABELS, label_output="probabilities")
    return publish(repo, cand, max_batch_size=32).version


def test_promote_rollback_delete(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for _ in range(3):
        publish_iris(repo, "iris")
    assert live_version(repo, "iris") == 3  # latest policy
    assert promote(repo, "iris", 1) == 3
    cfg = cfgmod.read_config(repo / "iris" / "config.pbtxt")
    assert list(cfg.version_policy.specific.versions) == [1] and live_version(repo, "iris") == 1
    gpu = cfgmod.read_config(repo / "iris" / "configs" / "gpu.pbtxt")
    assert list(gpu.version_policy.specific.versions) == [1]
    with pytest.raises(NoPreviousVersion):
        rollback(repo, "iris")
    promote(repo, "iris", 3)
    assert rollback(repo, "iris") == (3, 2) and live_version(repo, "iris") == 2
    with pytest.raises(VersionIsLive):
        delete_version(repo, "iris", 2)
    delete_version(repo, "iris", 3)
    assert versions(repo, "iris") == [1, 2]
    assert not [p for p in (repo / "iris").iterdir() if p.name.startswith(".")]  # no temp files left behind
    with pytest.raises(ModelNotFound):
        promote(repo, "iris", 7)
    with pytest.raises(ModelNotFound):
        promote(repo, "nope", 1)
