"""`mlstack bench --engine wrk`: real wrk against real servers, CPU per request of each server tree, the Lua script's rows."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtests import wrk
from mlstack.cli import app

runner = CliRunner()


def _bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def iris_repo(trained_repo: Path, tmp_path: Path) -> Path:
    """A repository with iris-logreg only, so Triton starts in seconds."""
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "iris-logreg", repo / "iris-logreg")
    return repo


def test_gateway_wrk_bench_reports_rps_latency_and_cpu_per_request_of_each_server(iris_repo: Path, tmp_path: Path) -> None:
    code, out = _bench("gateway", "--engine", "wrk", "--connections", "4", "--duration", "2s", "--repository", str(iris_repo),
                       "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert "gateway vs direct Triton: rps ×" in out and "load average" in out
    # the front door's targets are printed against this run's own figures, each marked met or not
    targets = [line for line in out.splitlines() if line.startswith("target ")]
    assert [t.split(":")[0] for t in targets] == [
        "target gateway CPU ms/request ≤ 0.2", "target ingester CPU ms/row ≤ 0.1", "target throughput ÷ direct Triton ≥ 0.6",
        "target p99 ÷ direct Triton ≤ 2", "target throughput ÷ plain FastAPI ≥ 2.5"], out
    assert all(t.endswith((" — met", " — not met")) for t in targets), targets
    (run_dir,) = list((tmp_path / "out").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    legs = summary["legs"]
    assert list(legs) == ["direct", "gateway", "baseline"]
    # the history ingester is a process of its own (as in `mlstack up`): its CPU per row is reported apart
    for name, trees in (("direct", ["triton"]), ("gateway", ["gateway", "triton", "ingester"]), ("baseline", ["baseline"])):
        leg = legs[name]
        assert leg["rps"] > 0 and leg["requests"] > 0 and leg["errors"] == 0, (name, leg)
        assert leg["p99_ms"] >= leg["p50_ms"] > 0
        assert sorted(leg["cpu_ms"]) == sorted(trees), (name, leg["cpu_ms"])
        assert all(leg["cpu_ms"][t] > 0 for t in trees), (name, leg["cpu_ms"])
        assert leg["wrk_cpu_ms"] > 0
    assert summary["connections"] == 4 and all(len(r["load_average"]) == 3 for r in summary["runs"])


def test_cache_bench_hit_leg_hits_and_miss_leg_never_does(iris_repo: Path, tmp_path: Path) -> None:
    code, out = _bench("cache", "--connections", "4", "--duration", "2s", "--repository", str(iris_repo), "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert "cache hit vs miss: rps ×" in out and "gateway CPU/request ×" in out
    (run_dir,) = list((tmp_path / "out").iterdir())
    legs = json.loads((run_dir / "summary.json").read_text())["legs"]
    hit, miss = legs["hit"], legs["miss"]
    assert hit["errors"] == miss["errors"] == 0
    assert hit["cache_hits"] >= hit["requests"] - 4  # only the first requests of the fixed body (one per connection) can miss
    assert miss["cache_hits"] == 0 and miss["requests"] > 0
    assert hit["cpu_ms"]["gateway"] > 0 and miss["cpu_ms"]["gateway"] > 0


class _Capture(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[bytes, str | None]]
    answer: bytes

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((body, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, type[_Capture]]]:
    handler = type("Handler", (_Capture,), {"seen": [], "answer": b'{"outputs":[{"name":"label","data":[1]}]}'})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/models/iris-logreg/infer", handler
    finally:
        server.shutdown()
        server.server_close()


def test_lua_script_sends_a_random_row_per_request_with_the_token(capture: tuple[str, type[_Capture]]) -> None:
    url, handler = capture
    result = wrk.run(url, connections=2, duration_s=1, threads=1, width=4, input_name="X", token="t0k")
    bodies = [json.loads(b) for b, _ in handler.seen]
    assert len(bodies) >= 2 and result.requests > 0 and result.errors == 0
    assert {auth for _, auth in handler.seen} == {"Bearer t0k"}
    rows = [tuple(b["inputs"][0]["data"]) for b in bodies]
    assert len(set(rows)) == len(rows), "rows repeat: a cache could hit"
    for b in bodies:
        (spec,) = b["inputs"]
        assert spec["name"] == "X" and spec["shape"] == [1, 4] and spec["datatype"] == "FP32" and len(spec["data"]) == 4


def test_lua_script_fixed_mode_repeats_one_body_and_counts_empty_outputs_as_errors(capture: tuple[str, type[_Capture]]) -> None:
    url, handler = capture
    handler.answer = b'{"outputs":[]}'  # what Triton's response cache once returned for a backend error
    result = wrk.run(url, connections=1, duration_s=1, threads=1, mode="fixed")
    assert len({b for b, _ in handler.seen}) == 1 and handler.seen[0][1] is None
    assert result.requests > 0 and result.bad_responses == result.requests == result.errors
    assert result.bad_sample.startswith("200 ")


@pytest.mark.parametrize("args", [["gateway", "--engine", "wrk"], ["cache"], ["triton", "--engine", "wrk"]])
def test_missing_wrk_is_a_usage_error_with_the_install_command(args: list[str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no wrk
    code, out = _bench(*args, "--duration", "1s", "--out", str(tmp_path / "out"))
    assert code == 2, out
    assert "apt-get install wrk" in out
