"""Every demo recipe: trained into a repository, metric above threshold, parity passed, Triton layout, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from mlstack.cli import app
from mlstack.repository.config import read_config
from mlstack.repository.layout import list_versions, read_card
from training.registry import RECIPES, get_recipe

EXPECTED = {
    "iris-svm": ("classification", "accuracy"), "iris-knn": ("classification", "accuracy"),
    "iris-rf": ("classification", "accuracy"), "iris-logreg": ("classification", "accuracy"),
    "diabetes-linear": ("regression", "r2"), "diabetes-rf": ("regression", "r2"),
    "digits-cnn": ("classification", "accuracy"), "digits-keras": ("classification", "accuracy"),
    "battery-fault": ("classification", None), "battery-anomaly": ("anomaly_detection", None),
}


def test_registry_names_the_ten_demo_models() -> None:
    assert set(RECIPES) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_recipe_published_with_metric_and_parity(trained_repo: Path, name: str) -> None:
    card = read_card(trained_repo, name, 1)
    task, metric = EXPECTED[name]
    assert card.task == task
    assert card.headline_metric is not None and card.headline_metric.passed, card.headline_metric
    assert card.headline_metric.threshold is not None
    if metric:
        assert card.headline_metric.name == metric
    if name.startswith("digits-"):
        assert card.headline_metric.value >= 0.95
    assert card.parity is not None and card.parity.passed and card.parity.n_rows == card.dataset.n_test
    if task != "regression":
        assert card.parity.label_agreement == 1.0
    assert card.parity.max_abs_diff <= card.parity.tolerance
    mdir = trained_repo / name
    onnx_bytes = (mdir / "1" / "model.onnx").read_bytes()
    assert card.onnx_sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert card.git_revision and card.created_at and card.opset
    cfg = read_config(mdir / "config.pbtxt")
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size > 0 and cfg.HasField("dynamic_batching")
    assert [i.name for i in cfg.input] == [i.name for i in card.inputs] == ["input"]
    assert [o.name for o in cfg.output] == [o.name for o in card.outputs]
    if task == "classification":
        labels = (mdir / "labels.txt").read_text().splitlines()
        assert labels == card.labels and len(labels) == card.outputs[1].shape[1]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exported_model_runs_with_a_dynamic_batch(trained_repo: Path, name: str) -> None:
    sess = ort.InferenceSession(str(trained_repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    card = read_card(trained_repo, name, 1)
    shape = card.inputs[0].shape[1:]
    for batch in (1, 7):
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": np.zeros((batch, *shape), np.float32)}),
                        strict=True))
        assert all(v.shape[0] == batch for v in outs.values())


@pytest.mark.parametrize("name", ["iris-rf", "digits-cnn"])
def test_training_is_deterministic(trained_repo: Path, name: str) -> None:
    again = get_recipe(name).train(lambda _line: None)
    assert hashlib.sha256(again.onnx_bytes).hexdigest() == read_card(trained_repo, name, 1).onnx_sha256


def test_models_json_lists_every_model(trained_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSTACK_REPOSITORY", str(trained_repo))
    from mlstack.settings import get_settings

    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["models", "--json"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["name"] for r in rows} == set(EXPECTED)
    assert all(r["parity"] is True and r["metric_passed"] is True and r["version"] == 1 for r in rows)
    assert len(list_versions(trained_repo)) == 10


def _cli(repo: Path, *args: str) -> tuple[int, str]:
    import os

    from mlstack.settings import get_settings

    old = os.environ.get("MLSTACK_REPOSITORY")
    os.environ["MLSTACK_REPOSITORY"] = str(repo)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, list(args))
    finally:
        if old is None:
            os.environ.pop("MLSTACK_REPOSITORY", None)
        else:
            os.environ["MLSTACK_REPOSITORY"] = old
        get_settings.cache_clear()
    return res.exit_code, res.output


def test_train_publishes_next_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code, out = _cli(repo, "train", "iris-logreg")
    assert code == 0, out
    code, out = _cli(repo, "train", "iris-logreg")
    assert code == 0, out
    assert sorted(p.name for p in (repo / "iris-logreg").iterdir() if p.name.isdigit()) == ["1", "2"]
    code, out = _cli(repo, "train", "--all", "--if-empty")
    assert code == 0 and "already holds models" in out
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == ["iris-logreg"]


def test_parity_failure_is_refused_naming_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "iris-broken", "tests.training.broken_recipe")
    repo = tmp_path / "repo"
    code, out = _cli(repo, "train", "iris-broken")
    assert code == 1
    assert "parity_failed" in out and "row 3" in out and "row 7" in out and "max abs diff" in out
    assert not (repo / "iris-broken").exists()


def test_unknown_recipe_and_no_names_exit_2(tmp_path: Path) -> None:
    code, out = _cli(tmp_path / "repo", "train", "nope")
    assert code == 2 and "unknown recipe" in out
    code, out = _cli(tmp_path / "repo", "train")
    assert code == 2 and "nothing to train" in out
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
