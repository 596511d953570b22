"""Repository format: config.pbtxt round trip, atomic publish, and every refusal leaves nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlstack.errors import PublishError, VersionExists
from mlstack.repository import config as cfgmod
from mlstack.repository.card import Dataset, ModelCard
from mlstack.repository.layout import versions
from mlstack.repository.publish import Candidate, load_onnx, publish


@pytest.fixture(scope="module")
def iris_onnx() -> bytes:
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    for out, new in zip(onx.graph.output, ("label", "probabilities"), strict=True):
        for node in onx.graph.node:
            node.output[:] = [new if o == out.name else o for o in node.output]
        out.name = new
    return onx.SerializeToString()


def _cand(data: bytes, name: str = "iris-test") -> Candidate:
    card = ModelCard(name=name, task="classification", framework="scikit-learn", algorithm="logreg",
                     dataset=Dataset(name="iris", source="sklearn.datasets.load_iris"))
    return Candidate(name=name, onnx_bytes=data, card=card, labels=["setosa", "versicolor", "virginica"],
                     label_output="probabilities")


def _tree(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.name != ".mlstack.lock")


def test_publish_writes_triton_layout(tmp_path: Path, iris_onnx: bytes) -> None:
    repo = tmp_path / "repo"
    pub = publish(repo, _cand(iris_onnx), max_batch_size=32, instance_count=2)
    assert pub.version == 1
    mdir = repo / "iris-test"
    assert (mdir / "1" / "model.onnx").read_bytes() == iris_onnx
    assert (mdir / "labels.txt").read_text().split() == ["setosa", "versicolor", "virginica"]
    cfg = cfgmod.read_config(mdir / "config.pbtxt")
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 32
    assert [t.name for t in cfg.input] == ["input"] and list(cfg.input[0].dims) == [4]
    outs = {t.name: t for t in cfg.output}
    assert list(outs["probabilities"].dims) == [3] and outs["probabilities"].label_filename == "labels.txt"
    assert list(outs["label"].dims) == [1] and list(outs["label"].reshape.shape) == []
    assert cfg.instance_group[0].count == 2 and cfg.HasField("dynamic_batching")
    card = pub.card
    assert card.version == 1 and card.onnx_sha256 and card.opset == 17
    assert card.inputs[0].shape == [-1, 4]
    # a second publish is version 2; version 1 is untouched
    assert publish(repo, _cand(iris_onnx), max_batch_size=32).version == 2
    assert versions(repo, "iris-test") == [1, 2]
    assert not [p for p in _tree(repo) if ".staging" in p]


def test_config_round_trip_is_equal(tmp_path: Path, iris_onnx: bytes) -> None:
    cfg = cfgmod.config_from_onnx(load_onnx(iris_onnx), "m", max_batch_size=8, label_output="probabilities")
    text = cfgmod.dumps(cfg)
    assert cfgmod.loads(text) == cfg
    assert cfgmod.dumps(cfgmod.loads(text)) == text


@pytest.mark.parametrize("case", ["not_onnx", "bad_name", "version_exists", "no_batch_dim"])
def test_refusals_write_nothing(tmp_path: Path, iris_onnx: bytes, case: str) -> None:
    repo = tmp_path / "repo"
    publish(repo, _cand(iris_onnx), version=1)
    before = _tree(repo)
    with pytest.raises(PublishError) as err:
        if case == "not_onnx":
            publish(repo, _cand(b"PK\x03\x04 definitely not a protobuf graph" * 10, name="other"))
        elif case == "bad_name":
            publish(repo, _cand(iris_onnx, name="../escape"))
        elif case == "version_exists":
            publish(repo, _cand(iris_onnx), version=1)
        else:
            m = load_onnx(iris_onnx)
            m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
            publish(repo, _cand(m.SerializeToString(), name="fixed"))
    expected = {"not_onnx": "not_onnx", "bad_name": "invalid_model_name",
                "version_exists": "version_exists", "no_batch_dim": "no_batch_dimension"}[case]
    assert err.value.code == expected, err.value.message
    if case == "version_exists":
        assert isinstance(err.value, VersionExists)
    assert _tree(repo) == before


def test_interrupted_publish_leaves_no_partial_version(tmp_path: Path, iris_onnx: bytes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    publish(repo, _cand(iris_onnx))
    before = _tree(repo)
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # die after model.onnx is written, before the card
            raise OSError("disk vanished")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        publish(repo, _cand(iris_onnx))
    monkeypatch.undo()
    assert _tree(repo) == before
    assert versions(repo, "iris-test") == [1]
