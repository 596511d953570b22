"""`mlstack bench` end to end: a few seconds of real Locust load on real servers, reports written, exit codes honest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from loadtests.plot import load, plot
from mlstack.cli import app
from tests.fixtures.triton import TritonFixture

runner = CliRunner()


def _bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_triton_bench_against_a_running_triton_writes_reports_and_ratio(triton: TritonFixture, tmp_path: Path) -> None:
    code, out = _bench("triton", "--users", "4", "--spawn-rate", "4", "--duration", "3s", "--url", triton.server.http_url,
                       "--repository", str(triton.repository), "--out", str(tmp_path))
    assert code == 0, out
    assert "Triton vs baseline" in out and "baseline" in out
    (run_dir,) = list(tmp_path.iterdir())
    assert run_dir.name.endswith("-triton")
    for leg in ("triton", "baseline"):
        assert (run_dir / f"{leg}_stats.csv").exists() and (run_dir / f"{leg}.html").stat().st_size > 1000
    summary = json.loads((run_dir / "summary.json").read_text())
    for leg in ("triton", "baseline"):
        r = summary["legs"][leg]
        assert r["requests"] > 20 and r["failures"] == 0 and r["rps"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert 0 < r["locust_cpu"] < 2.5
    png = plot(load(tmp_path), tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_exits_nonzero_when_requests_fail(triton: TritonFixture, tmp_path: Path) -> None:
    """A model Triton does not serve: every Triton request fails (404), so the bench must exit 1 and still report."""
    repo = tmp_path / "repo"
    shutil.copytree(triton.repository / "iris-logreg", repo / "ghost-model")
    code, out = _bench("triton", "--users", "2", "--spawn-rate", "2", "--duration", "2s", "--url", triton.server.http_url,
                       "--repository", str(repo), "--model", "ghost-model", "--out", str(tmp_path / "out"))
    assert code == 1, out
    assert "above --max-failure-ratio" in out
    (run_dir,) = list((tmp_path / "out").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["legs"]["triton"]["failure_ratio"] == 1.0 and summary["legs"]["baseline"]["failures"] == 0


def test_unknown_scenario_is_a_usage_error() -> None:
    code, out = _bench("nope", "--duration", "1s")
    assert code == 2 and "unknown scenario" in out
