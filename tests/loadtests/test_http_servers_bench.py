"""loadtests/http_servers_bench.py: the same gateway under uvicorn and granian, side by side (real Triton, real wrk)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from loadtests import http_servers_bench as hsb
from mlstack.settings import get_settings


def test_granian_variants_parse_and_refuse_unknown_options() -> None:
    assert hsb.GranianVariant.parse("uvloop") == hsb.GranianVariant()
    v = hsb.GranianVariant.parse("asyncio-rt2-bp32-h1-rust")
    assert (v.loop, v.runtime_threads, v.backpressure, v.http, v.task_impl, v.mp) == ("asyncio", 2, 32, "1", "rust", False)
    assert hsb.GranianVariant.parse("uvloop-mt").runtime_mode == "mt" and hsb.GranianVariant.parse("uvloop-mt").mp
    for bad in ("trio", "uvloop-fast"):
        with pytest.raises(ValueError):
            hsb.GranianVariant.parse(bad)


def test_thread_cpu_splits_the_main_thread_from_the_others() -> None:
    sum(range(200_000))
    cpu = hsb.thread_cpu_s(os.getpid())
    assert cpu["main"] > 0 and set(cpu) <= {"main", "threads", "child-main", "child-threads"}


def test_bench_runs_uvicorn_and_granian_legs_and_writes_the_summary(trained_repo: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "iris-logreg", repo / "iris-logreg")
    settings = get_settings().model_copy(update={"var_dir": tmp_path / "var"})
    summary = hsb.bench(repo, "iris-logreg", 2, 1.0, 1, ["uvloop"], True, tmp_path / "out", settings)
    out = capsys.readouterr().out
    assert "MLSTACK_GATEWAY_INGESTER=external with no ingester" in out and "gateway CPU/request vs uvicorn" in out
    assert set(summary["servers"]) == {"uvicorn", "granian-uvloop"}
    for s in summary["servers"].values():
        assert s["requests"] > 0 and s["errors"] == 0 and s["gateway_cpu_ms"] > 0 and s["triton_cpu_ms"] > 0
    (run_dir,) = list((tmp_path / "out").iterdir())
    assert json.loads((run_dir / "summary.json").read_text())["gateway_cpu_ratio_vs_uvicorn_per_round"]["granian-uvloop"]
