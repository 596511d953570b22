"""`mlstack bench stored-inputs` end to end: a few seconds of classify_image through two real gateways (upload kept vs
not) in front of a real task service; the on/off throughput ratio is printed and every "on" request stored an object."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlstack.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_bench_stored_inputs_reports_the_on_off_ratio(trained_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "digits-cnn", repo / "digits-cnn")
    result = runner.invoke(app, ["bench", "stored-inputs", "--users", "2", "--duration", "2s", "--repository", str(repo)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    m = re.search(r"throughput with stored inputs / without: ([0-9.]+) \(median of 1 round\(s\)\); objects stored: (\d+); "
                  r"failure ratio 0\.00%", out)
    assert m, out
    assert float(m.group(1)) > 0 and int(m.group(2)) > 0, out
    on = re.findall(r"on: [0-9.]+ rps, .*?(\d+) errors / (\d+)", out)
    assert on and int(on[-1][0]) == 0 and int(on[-1][1]) > 0, out


def test_bench_stored_inputs_needs_an_image_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "stored-inputs", "--repository", str(tmp_path)])
    assert result.exit_code == 2 and "digits-cnn" in result.output, result.output
