"""Logs survive a restart (appended, with a start marker per run; failure causes quote only the current run), and
`mlstack status` reports each tier's own state fast while Triton is frozen."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlstack.process import ManagedProcess, StartError, start_log
from services.triton.logs import cause_from_log
from tests.fixtures.triton import free_ports

MLSTACK = [sys.executable, "-m", "mlstack"]


def test_a_failed_restart_keeps_the_earlier_log_and_quotes_only_its_own_run(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "tier.log"
    messages = []
    for word in ("alpha-first-run", "beta-second-run"):
        argv = ["sh", "-c", f"echo {word}; exit 3"]
        proc = ManagedProcess("tier", argv, ready_url="http://127.0.0.1:9/", log_path=log, url="")
        with pytest.raises(StartError) as info:
            proc.start(timeout=10)
        messages.append(info.value.message)
    assert "alpha-first-run" in messages[0]
    assert "beta-second-run" in messages[1] and "alpha-first-run" not in messages[1]
    text = log.read_text()
    assert text.index("alpha-first-run") < text.index("beta-second-run")  # appended, not truncated
    markers = [ln for ln in text.splitlines() if "mlstack started:" in ln]
    assert len(markers) == 2 and all("sh -c" in m and "exit 3" in m for m in markers)
    assert all(m[6:10].isdigit() for m in markers)  # "===== <ISO time> ..."


def test_triton_cause_is_read_from_the_current_run_only(tmp_path: Path) -> None:
    log = tmp_path / "triton.log"
    log.write_text("E0101 00:00:00.000000 1 server.cc:1] yesterday: failed to load 'old-model'\n")
    offset = start_log(log, ["tritonserver", "--model-repository=/x"])
    with open(log, "a") as f:
        f.write("E0102 00:00:00.000000 1 server.cc:2] today: port already in use\n")
    cause = cause_from_log(log, offset=offset)
    assert "today" in cause and "yesterday" not in cause
    assert "yesterday" in cause_from_log(log)  # the old run is still in the file


@pytest.fixture
def small_stack(trained_repo: Path, tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "model_repository"
    repo.mkdir()
    shutil.copytree(trained_repo / "iris-logreg", repo / "iris-logreg")
    ports = free_ports(7)
    env = dict(os.environ)
    env.update({
        "MLSTACK_REPOSITORY": str(repo), "MLSTACK_VAR_DIR": str(tmp_path / "var"),
        "MLSTACK_TRITON_HTTP_PORT": str(ports[0]), "MLSTACK_TRITON_GRPC_PORT": str(ports[1]),
        "MLSTACK_TRITON_METRICS_PORT": str(ports[2]), "MLSTACK_GATEWAY_HTTP_PORT": str(ports[3]),
        "MLSTACK_GATEWAY_GRPC_PORT": str(ports[4]), "MLSTACK_BENTO_PORT": str(ports[5]),
        "MLSTACK_PROMETHEUS_PORT": str(ports[6]), "MLSTACK_ADMIN_PASSWORD": "stack-test-admin-pw",
        "MLSTACK_DEFAULT_INSTANCE_COUNT": "1", "MLSTACK_TRITON_EXIT_TIMEOUT_S": "2",
    })
    env.pop("MLSTACK_DATABASE_URL", None)
    return env


def _status(env: dict[str, str]) -> tuple[dict[str, dict], float]:
    start = time.perf_counter()
    out = subprocess.run([*MLSTACK, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    return {r["component"]: r for r in json.loads(out.stdout)}, time.perf_counter() - start


def _up(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*MLSTACK, "up", "--only", "triton", "--only", "gateway"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlstack up exited early:\n{proc.stdout.read() if proc.stdout else ''}"
        rows, _ = _status(env)
        if rows["triton"]["healthy"] and rows["gateway"]["healthy"]:
            return proc
        time.sleep(1)
    proc.kill()
    raise AssertionError(f"stack not healthy: {_status(env)}")


def _down(env: dict[str, str], proc: subprocess.Popen[str]) -> None:
    subprocess.run([*MLSTACK, "down"], env=env, capture_output=True, text=True, timeout=120)
    proc.wait(timeout=60)


def test_status_while_triton_is_frozen_and_logs_across_a_restart(small_stack: dict[str, str]) -> None:
    env = small_stack
    logs = Path(env["MLSTACK_VAR_DIR"]) / "logs"
    proc = _up(env)
    try:
        pid = int((Path(env["MLSTACK_VAR_DIR"]) / "run" / "triton.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.6)  # past the gateway's cached probe
            rows, elapsed = _status(env)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert elapsed < 4.0, f"mlstack status took {elapsed:.1f} s with Triton frozen"
        assert rows["triton"]["state"] == "not responding" and not rows["triton"]["healthy"], rows["triton"]
        assert rows["gateway"]["state"] == "up, not ready: triton", rows["gateway"]
        assert rows["bento"]["state"] == "down"
        first = {name: (logs / f"{name}.log").read_text() for name in ("triton", "gateway")}
    finally:
        _down(env, proc)
    proc = _up(env)
    _down(env, proc)
    for name, before in first.items():
        text = (logs / f"{name}.log").read_text()
        assert text.startswith(before), f"{name}.log lost the first run's output"
        assert text.count("mlstack started:") == 2, name
    assert "tritonserver" in (logs / "triton.log").read_text().splitlines()[1]  # the marker names the command
