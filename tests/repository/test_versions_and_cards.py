"""Versions without a card keep the model's schema; partial cards are completed, bad ones refused by field; version
numbers are never reused (after deleting a version or a whole model, from the CLI as from the library)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from mlstack.cli import app
from mlstack.errors import PublishError, VersionExists
from mlstack.repository import intake
from mlstack.repository.layout import read_card, versions
from mlstack.repository.publish import Candidate, publish
from mlstack.repository.serving import delete_model, delete_version, promote
from mlstack.settings import get_settings
from tests.auth_api.test_serving import iris_card, iris_onnx


def _upload(repo: Path, name: str, card: str | None = None, background: bytes | None = None) -> tuple[int, intake.Intake]:
    data = iris_onnx()
    got = intake.prepare(repo, name, data, card, background=background)
    cand = Candidate(name=name, onnx_bytes=data, card=got.card, labels=got.card.labels,
                     label_output="probabilities" if got.card.labels else None, extra_files=got.extra_files)
    return publish(repo, cand, max_batch_size=32).version, got


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_version_without_card_inherits_the_live_schema(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    full = iris_card("iris").model_dump_json()
    assert _upload(repo, "iris", full, background=_npy(np.ones((5, 4))))[0] == 1
    v2, got = _upload(repo, "iris")
    card = read_card(repo, "iris", v2)
    assert card.task == "classification"
    assert card.labels == iris_card("iris").labels and card.feature_names == iris_card("iris").feature_names
    assert got.summary()["inherited"] == {"from_version": 1, "fields": ["task", "feature_names", "labels", "dataset"]}
    # The SHAP background follows the schema, and the card says where it came from.
    assert got.background == "inherited:v1" and card.background == "inherited:v1" and "background.npy" in card.files
    assert np.load(repo / "iris" / "2" / "background.npy").shape == (5, 4)
    # What belongs to the artifact is not inherited.
    assert card.metrics == {} and card.headline_metric is None


def test_version_without_card_and_another_graph_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Nothing to inherit from when the graph differs: the upload is refused naming why, the live schema is untouched."""
    repo = tmp_path / "repo"
    _upload(repo, "iris", iris_card("iris").model_dump_json())
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    other = convert_sklearn(clf, initial_types=[("X", FloatTensorType([None, 4]))],  # skl2onnx's own tensor names
                            options={id(clf): {"zipmap": False}}, target_opset=17).SerializeToString()
    got = intake.prepare(repo, "iris", other, None)
    assert got.inherited == [] and got.card.labels is None  # no schema carried over to a graph it does not describe
    with pytest.raises(PublishError) as err:
        publish(repo, Candidate(name="iris", onnx_bytes=other, card=got.card), max_batch_size=32)
    assert err.value.code == "incompatible_signature" and err.value.status == 422
    assert "inputs/outputs differ" in err.value.message and "new model name" in err.value.message
    assert [t[0] for t in err.value.details["candidate"]["inputs"]] == ["X"]
    assert versions(repo, "iris") == [1] and read_card(repo, "iris", 1).labels == iris_card("iris").labels


def test_partial_card_wins_over_inheritance_and_new_model_infers_task(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _, got = _upload(repo, "fresh")  # no live version: nothing to inherit, task from the outputs
    assert got.card.task == "classification" and got.inherited == [] and got.card.dataset.name == "unknown"
    _upload(repo, "fresh", iris_card("fresh").model_dump_json())
    _, got = _upload(repo, "fresh", json.dumps({"task": "classification", "description": "retrained"}))
    assert got.card.description == "retrained" and "description" not in got.inherited and "labels" in got.inherited


def test_card_without_name_or_dataset_is_accepted_and_bad_fields_are_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    card = {"task": "classification", "framework": "scikit-learn", "algorithm": "logreg"}
    v, got = _upload(repo, "nameless", json.dumps(card))
    assert got.card.name == "nameless" and got.card.dataset.source == "external"
    with pytest.raises(PublishError) as err:
        _upload(repo, "nameless", json.dumps({"task": "clustering", "metrics": {"acc": "high"}}))
    assert err.value.code == "invalid_card" and err.value.status == 422
    fields = {e["field"] for e in err.value.details["errors"]}
    assert {"task", "metrics.acc"} <= fields
    assert "pydantic" not in err.value.message and "input_value" not in err.value.message
    with pytest.raises(PublishError) as err:
        _upload(repo, "nameless", "[1, 2")
    assert err.value.code == "invalid_card"
    assert versions(repo, "nameless") == [v]


@pytest.mark.parametrize(("arr", "why"), [
    (np.ones((5, 3)), "expected [rows, 4]"),
    (np.full((2, 4), np.nan), "finite"),
    (np.ones((1001, 4)), "rows"),
    (np.array([["a"] * 4]), "numeric"),
])
def test_background_is_validated(tmp_path: Path, arr: np.ndarray, why: str) -> None:
    with pytest.raises(PublishError) as err:
        _upload(tmp_path / "repo", "bg", iris_card("bg").model_dump_json(), background=_npy(arr))
    assert err.value.code == "invalid_background" and why in err.value.message
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PublishError, match=r"not a \.npy"):
        _upload(tmp_path / "repo", "bg", None, background=pickled.getvalue())


def test_version_numbers_are_never_reused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for _ in range(3):
        _upload(repo, "iris", iris_card("iris").model_dump_json())
    delete_version(repo, "iris", 2)
    assert _upload(repo, "iris")[0] == 4  # not 2
    delete_version(repo, "iris", 1)
    with pytest.raises(VersionExists) as err:
        publish(repo, Candidate(name="iris", onnx_bytes=iris_onnx(), card=iris_card("iris")), version=1, max_batch_size=32)
    assert err.value.code == "version_retired"
    assert delete_model(repo, "iris") == [3, 4]
    assert not (repo / "iris").exists() and not [p for p in repo.parent.iterdir() if p.name.startswith(".staging")]
    # A model recreated under the same name continues where the old one stopped.
    assert _upload(repo, "iris", iris_card("iris").model_dump_json())[0] == 5


def test_cli_publish_inherits_and_continues_numbering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    monkeypatch.setenv("MLSTACK_REPOSITORY", str(repo))
    get_settings.cache_clear()
    onnx_file, card_file, bg_file = tmp_path / "m.onnx", tmp_path / "card.json", tmp_path / "bg.npy"
    onnx_file.write_bytes(iris_onnx())
    card_file.write_text(json.dumps({"task": "classification", "labels": iris_card("x").labels,
                                     "feature_names": iris_card("x").feature_names}))
    np.save(bg_file, np.zeros((3, 4), np.float32))
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["publish", str(onnx_file), "--name", "cli-iris", "--card", str(card_file),
                                  "--background", str(bg_file)])
        assert res.exit_code == 0, res.output
        assert "background sample: uploaded" in res.output
        res = runner.invoke(app, ["publish", str(onnx_file), "--name", "cli-iris"])
        assert res.exit_code == 0 and "inherited from version 1: task, feature_names, labels" in res.output, res.output
        assert read_card(repo, "cli-iris", 2).labels == iris_card("x").labels
        promote(repo, "cli-iris", 1)
        delete_version(repo, "cli-iris", 2)
        res = runner.invoke(app, ["publish", str(onnx_file), "--name", "cli-iris"])
        assert "version 3" in res.output, res.output
    finally:
        get_settings.cache_clear()
