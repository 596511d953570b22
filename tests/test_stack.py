"""`mlstack up / status / down` as a user runs them: real children, readiness, clean Ctrl+C, clear start failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

MLSTACK = [sys.executable, "-m", "mlstack"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack_env(trained_repo: Path, tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "model_repository"
    shutil.copytree(trained_repo, repo)
    env = dict(os.environ)
    env.update({
        "MLSTACK_REPOSITORY": str(repo), "MLSTACK_VAR_DIR": str(tmp_path / "var"),
        "MLSTACK_TRITON_HTTP_PORT": str(_free_port()), "MLSTACK_TRITON_GRPC_PORT": str(_free_port()),
        "MLSTACK_TRITON_METRICS_PORT": str(_free_port()), "MLSTACK_GATEWAY_HTTP_PORT": str(_free_port()),
        "MLSTACK_GATEWAY_GRPC_PORT": str(_free_port()), "MLSTACK_BENTO_PORT": str(_free_port()),
        "MLSTACK_PROMETHEUS_PORT": str(_free_port()), "MLSTACK_INGESTER_METRICS_PORT": str(_free_port()),
        "MLSTACK_ADMIN_PASSWORD": "stack-test-admin-pw",
        "MLSTACK_DEFAULT_INSTANCE_COUNT": "1",
    })
    env.pop("MLSTACK_DATABASE_URL", None)
    return env


def _status(env: dict[str, str]) -> list[dict]:
    out = subprocess.run([*MLSTACK, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def _wait_healthy(proc: subprocess.Popen, env: dict[str, str], components: set[str], timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlstack up exited early:\n{proc.stdout.read() if proc.stdout else ''}"
        rows = _status(env)
        if all(r["healthy"] for r in rows if r["component"] in components):
            return rows
        time.sleep(1)
    raise AssertionError(f"stack not healthy after {timeout}s: {_status(env)}")


def _wait_targets_up(prom: str, jobs: set[str], timeout: float = 60) -> None:
    """Prometheus really scrapes each tier's /metrics (not just: the process is up)."""
    deadline = time.monotonic() + timeout
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if all(health.get(j) == "up" for j in jobs):
            return
        time.sleep(1)
    raise AssertionError(f"Prometheus targets not all up: {health}")


def test_up_status_and_ctrl_c_leaves_no_orphans(stack_env: dict[str, str]) -> None:
    proc = subprocess.Popen([*MLSTACK, "up", "--with-prometheus"], env=stack_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        rows = _wait_healthy(proc, stack_env, {"triton", "bento", "gateway", "prometheus"})
        prom = next(r for r in rows if r["component"] == "prometheus")["url"]
        _wait_targets_up(prom, {"triton", "gateway", "bento"})
        triton = next(r for r in rows if r["component"] == "triton")
        assert any(m.startswith("digits-cnn:") for m in triton["models"]) and len(triton["models"]) == 10
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert all(f"stopping {c}" in out for c in ("prometheus", "gateway", "bento", "triton")), out
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left after Ctrl+C: {[(p.pid, p.name()) for p in alive]}"
    assert not any(r["healthy"] for r in _status(stack_env))


def test_down_stops_a_running_stack(stack_env: dict[str, str]) -> None:
    proc = subprocess.Popen([*MLSTACK, "up", "--only", "triton"], env=stack_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(proc, stack_env, {"triton"})
        res = subprocess.run([*MLSTACK, "down"], env=stack_env, capture_output=True, text=True, timeout=120)
        assert "stack stopped" in res.stdout
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.run([*MLSTACK, "down"], env=stack_env, capture_output=True, text=True, timeout=60)
    assert "nothing is running" in res.stdout


def test_up_fails_fast_naming_a_busy_port(stack_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(stack_env["MLSTACK_TRITON_HTTP_PORT"])))
        busy.listen()
        t0 = time.monotonic()
        res = subprocess.run([*MLSTACK, "up", "--only", "triton"], env=stack_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert stack_env["MLSTACK_TRITON_HTTP_PORT"] in res.stdout and "in use" in res.stdout
    assert time.monotonic() - t0 < 60


def _up_gateway_until_ready(env: dict[str, str]) -> str:
    """`mlstack up --only gateway` until it says the stack is up (or exits), then Ctrl+C; its console output."""
    proc = subprocess.Popen([*MLSTACK, "up", "--only", "gateway"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends at EOF if `up` exits early
            lines.append(line)
            if "stack is up" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + out
    return "".join(lines) + out


def test_generated_admin_password_is_shown_once_on_the_console(stack_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in stack_env.items() if k != "MLSTACK_ADMIN_PASSWORD"}
    first = _up_gateway_until_ready(env)
    assert "created admin user 'admin' with password " in first, first
    password = first.split("with password ", 1)[1].split()[0]
    log = (Path(env["MLSTACK_VAR_DIR"]) / "logs" / "gateway.log").read_text()
    assert password not in log
    second = _up_gateway_until_ready(env)
    assert "created admin user" not in second, second
