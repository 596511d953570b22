"""`mlstack publish`: an external ONNX file becomes the next version; refusals exit 2 and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlstack.cli import app
from mlstack.repository.layout import read_card
from mlstack.settings import get_settings


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "repo"
    monkeypatch.setenv("MLSTACK_REPOSITORY", str(repo))
    get_settings.cache_clear()

    def _run(*args: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, list(args))
        return res.exit_code, res.output

    yield repo, _run
    get_settings.cache_clear()


def test_publish_without_card_infers_task_and_versions(run, trained_repo: Path, tmp_path: Path) -> None:
    repo, cli = run
    src = trained_repo / "iris-logreg" / "1" / "model.onnx"
    code, out = cli("publish", str(src), "--name", "external-iris")
    assert code == 0, out
    assert "version 1" in out
    card = read_card(repo, "external-iris", 1)
    assert card.task == "classification" and card.framework == "external"
    code, out = cli("publish", str(src), "--name", "external-iris")
    assert code == 0 and "version 2" in out
    anomaly = trained_repo / "battery-anomaly" / "1" / "model.onnx"
    assert cli("publish", str(anomaly), "--name", "ext-anomaly")[0] == 0
    assert read_card(repo, "ext-anomaly", 1).task == "anomaly_detection"


def test_publish_with_card_keeps_labels(run, trained_repo: Path) -> None:
    repo, cli = run
    card = trained_repo / "iris-svm" / "1" / "model_card.json"
    code, out = cli("publish", str(trained_repo / "iris-svm" / "1" / "model.onnx"), "--name", "svm-copy", "--card", str(card))
    assert code == 0, out
    assert (repo / "svm-copy" / "labels.txt").read_text().split() == ["setosa", "versicolor", "virginica"]
    assert 'label_filename: "labels.txt"' in (repo / "svm-copy" / "config.pbtxt").read_text()


@pytest.mark.parametrize("case", ["not_onnx", "bad_name", "bad_card", "missing_file"])
def test_refusals_exit_2_and_write_nothing(run, trained_repo: Path, tmp_path: Path, case: str) -> None:
    repo, cli = run
    good = str(trained_repo / "iris-knn" / "1" / "model.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG not a model")
    bad_card = tmp_path / "card.json"
    bad_card.write_text(json.dumps({"task": "astrology"}))
    args = {"not_onnx": [str(junk), "--name", "m"], "bad_name": [good, "--name", "../escape"],
            "bad_card": [good, "--name", "m", "--card", str(bad_card)],
            "missing_file": [str(tmp_path / "nope.onnx"), "--name", "m"]}[case]
    code, out = cli("publish", *args)
    assert code == 2, out
    assert "refused" in out
    assert not repo.exists() or not any(p for p in repo.iterdir() if p.name != ".mlstack.lock")
