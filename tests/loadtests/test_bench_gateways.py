"""`mlstack bench gateway --engine wrk --gateways 2`: one gateway without Redis, one with, two sharing Redis, in one run;
the report carries throughput, p99, CPU per request of each tier and the Redis round trips per request."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlstack.cli import app
from mlstack.settings import get_settings

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("MLSTACK_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_two_gateways_vs_one_with_and_without_redis_in_one_run(trained_repo: Path, tmp_path: Path,
                                                                env: pytest.MonkeyPatch) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server", pytrace=False)
    env.setenv("MLSTACK_REDIS_URL", "redis://127.0.0.1:6379/9")
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "iris-logreg", repo / "iris-logreg")
    result = runner.invoke(app, ["bench", "gateway", "--engine", "wrk", "--gateways", "2", "--connections", "4", "--duration", "2s",
                                 "--repository", str(repo), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "shared state costs" in out and "2 gateways on" in out and "token-bucket script round trip" in out, out
    (run_dir,) = list((tmp_path / "out").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    legs = summary["legs"]
    assert list(legs) == ["gw1-local", "gw1-redis", "gw2-redis"]
    for name, leg in legs.items():
        assert leg["requests"] > 0 and leg["errors"] == 0 and leg["p99_ms"] >= leg["p50_ms"] > 0, (name, leg)
        assert leg["cpu_ms"]["gateway"] > 0 and leg["cpu_ms"]["triton"] > 0 and "redis" in leg["cpu_ms"], (name, leg["cpu_ms"])
    assert legs["gw1-local"]["extra"]["redis_round_trips_per_request"] == 0  # the bench's own redis-server: nobody else's calls
    for name in ("gw1-redis", "gw2-redis"):  # one token-bucket script per request, nothing else
        extra = legs[name]["extra"]
        assert 0.99 <= extra["redis_round_trips_per_request"] <= 1.05, (name, extra)
        assert extra["redis:evalsha"] >= 0.99 and extra["redis_usec_per_round_trip"] > 0, (name, extra)
    two = legs["gw2-redis"]["extra"]
    assert two["gateways"] == 2 and two["cpu_ms:gw1"] > 0.2 * two["cpu_ms:gw2"] > 0, two  # wrk's threads spread over both
    rtt = summary["redis_rtt"]
    assert 0 < rtt["p50_us"] <= rtt["p99_us"] and rtt["samples"] > 0
    assert summary["history"]["rows"] >= summary["history"]["successful_requests"] > 0

def test_more_gateways_need_redis(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    env.delenv("MLSTACK_REDIS_URL", raising=False)
    result = runner.invoke(app, ["bench", "gateway", "--gateways", "2", "--duration", "1s", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "MLSTACK_REDIS_URL" in result.output and not (tmp_path / "out").exists()
    result = runner.invoke(app, ["bench", "triton", "--gateways", "2"])
    assert result.exit_code == 2 and "--gateways" in result.output
