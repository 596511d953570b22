"""`mlstack bench ws` end to end: a few seconds of WebSocket streams through a real gateway and Triton, figures printed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlstack.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_bench_ws_streams_frames_and_reports_answers_latency_and_cpu(trained_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "digits-cnn", repo / "digits-cnn")
    result = runner.invoke(app, ["bench", "ws", "--connections", "2", "--fps", "5", "--duration", "3s", "--repository", str(repo)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "2 connections x 5 frames/s" in out and "p99 ms" in out and "gateway CPU" in out, out
    m = re.search(r"sent (\d+), answered (\d+)", out)
    assert m, out
    sent, answered = int(m.group(1)), int(m.group(2))
    assert sent >= 20 and answered == sent, out  # 10 frames/s offered is far below capacity: every frame answered
    # where the time goes: inside the gateway (from the answers' own latency_ms) vs the client's schedule
    inside = re.search(r"latency inside the gateway \(frame read -> answer sent\) p50 ([0-9.]+) / p99 ([0-9.]+) ms", out)
    assert inside and 0 < float(inside.group(1)) <= float(inside.group(2)), out
    assert re.search(r"client send lag behind schedule p50 [0-9.]+ / p99 [0-9.]+ ms; client CPU \d+%", out), out
