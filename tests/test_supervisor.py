"""The supervisor every tier runs under: a replica killed with -9 comes back (backoff, counted in
``mlstack_tier_restarts_total``), a tier that fails at every restart stops the stack naming its cause; the same through
``mlstack up --gateways 2`` with the real gateways (sharing one state), and how replicas get their ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlstack.process import ManagedProcess, port_in_use
from mlstack.supervisor import RestartPolicy, Supervisor, SupervisorMetrics
from tests.fixtures.gateway import PASSWORD
from tests.fixtures.redis import forget
from tests.fixtures.triton import free_ports

MLSTACK = [sys.executable, "-m", "mlstack"]
# A tiny HTTP tier: serves on argv[1] unless the file argv[2] exists, in which case it fails like a broken config does.
TIER = ("import http.server, os, sys\n"
        "if os.path.exists(sys.argv[2]):\n"
        "    print('fatal: config file broken-xyz is invalid', flush=True); sys.exit(2)\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()\n")


def _web(tmp_path: Path, port: int) -> ManagedProcess:
    return ManagedProcess("web", [sys.executable, "-c", TIER, str(port), str(tmp_path / "broken")],
                          ready_url=f"http://127.0.0.1:{port}/", log_path=tmp_path / "logs" / f"web-{port}.log",
                          url=f"http://127.0.0.1:{port}", cwd=tmp_path, stop_timeout_s=5)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, list[ManagedProcess], list[str], int]]:
    *ports, metrics_port = free_ports(3)
    sup = Supervisor(RestartPolicy(backoff_s=0.2, backoff_max_s=0.4, budget=2, window_s=60), SupervisorMetrics())
    procs = [_web(tmp_path, p) for p in ports]
    for proc in procs:
        sup.add("web", proc, proc.url)
    lines: list[str] = []
    sup.start(lines.append)
    assert sup.metrics.serve("127.0.0.1", metrics_port)
    yield sup, procs, lines, metrics_port
    sup.stop(lines.append)
    assert all(p.process is None for p in procs)


def _metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith(name + "{") and 'tier="web"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_killed_replica_comes_back_then_a_tier_that_keeps_failing_stops_with_its_cause(
        supervised: tuple[Supervisor, list[ManagedProcess], list[str], int], tmp_path: Path) -> None:
    sup, procs, lines, metrics_port = supervised
    assert [r.name for r in sup.replicas] == ["web", "web-2"] and _metric(metrics_port, "mlstack_tier_replicas_up") == 2
    stop = threading.Event()
    result: list[int] = []
    watcher = threading.Thread(target=lambda: result.append(sup.run(stop, lines.append, interval_s=0.05)))
    watcher.start()
    try:
        old = procs[1].process
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while not any("web-2 restarted and ready" in line for line in lines):
            assert time.monotonic() < deadline and watcher.is_alive(), lines
            time.sleep(0.05)
        assert httpx.get(procs[1].url).status_code == 200 and procs[1].process is not None and procs[1].process.pid != old.pid
        assert any("web-2 died (killed by signal SIGKILL" in line and "restarting in 0.2 s" in line for line in lines), lines
        assert _metric(metrics_port, "mlstack_tier_restarts_total") == 1
        assert _metric(metrics_port, "mlstack_tier_replicas_up") == 2
        assert httpx.get(procs[0].url).status_code == 200  # the other replica was never touched

        (tmp_path / "broken").touch()  # from now on every start of the tier fails
        os.kill(procs[0].process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        watcher.join(timeout=20)
        assert not watcher.is_alive() and result == [1], lines
    finally:
        stop.set()
        watcher.join(timeout=10)
    error = lines[-1]
    assert error.startswith("error: web keeps failing (2 restarts in 60 s)"), lines
    assert "exited with code 2" in error and "config file broken-xyz is invalid" in error
    assert _metric(metrics_port, "mlstack_tier_restarts_total") == 3  # 1 for web-2, 2 for web


def _up_env(tmp_path: Path) -> dict[str, str]:
    http, grpc, ingester, metrics = free_ports(4)
    env = dict(os.environ)
    env.update({
        "MLSTACK_REPOSITORY": str(tmp_path / "empty-repo"), "MLSTACK_VAR_DIR": str(tmp_path / "var"),
        "MLSTACK_GATEWAY_HTTP_PORT": str(http), "MLSTACK_GATEWAY_GRPC_PORT": str(grpc),
        "MLSTACK_INGESTER_METRICS_PORT": str(ingester), "MLSTACK_SUPERVISOR_METRICS_PORT": str(metrics),
        "MLSTACK_ADMIN_PASSWORD": "supervisor-test-pw", "MLSTACK_GATEWAY_WORKERS": "1",
        "MLSTACK_SUPERVISOR_BACKOFF_S": "0.3", "MLSTACK_SUPERVISOR_RESTART_BUDGET": "2",
    })
    env.pop("MLSTACK_DATABASE_URL", None)
    (tmp_path / "empty-repo").mkdir()
    return env


def _read_until(proc: subprocess.Popen[str], needle: str, lines: list[str], timeout: float = 90) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"`mlstack up` ended before {needle!r}:\n{''.join(lines)}")


def test_mlstack_up_two_gateways_share_state_survive_a_kill_and_stop_when_one_cannot_come_back(tmp_path: Path) -> None:
    env = _up_env(tmp_path)
    res = subprocess.run([*MLSTACK, "up", "--only", "gateway", "--gateways", "2"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "MLSTACK_REDIS_URL" in res.stdout, res.stdout + res.stderr
    while True:  # two consecutive free HTTP ports
        (http,) = free_ports(1)
        if not port_in_use("127.0.0.1", http + 1):
            break
    env.update({"MLSTACK_GATEWAY_HTTP_PORT": str(http), "MLSTACK_REDIS_URL": REDIS_DB,
                "MLSTACK_GATEWAY_RATE_LIMIT_RPS": "0.001", "MLSTACK_GATEWAY_RATE_LIMIT_BURST": str(BURST)})
    _forget_rate_limits()  # a fresh database reuses user ids: a bucket left from an earlier run would be drained
    a, b = f"http://127.0.0.1:{http}", f"http://127.0.0.1:{http + 1}"
    proc = subprocess.Popen([*MLSTACK, "up", "--only", "gateway", "--gateways", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        _read_until(proc, "stack is up", lines)
        token = httpx.post(f"{a}/api/v1/auth/login", json={"username": "admin", "password": "supervisor-test-pw"},
                           timeout=10).json()["access_token"]
        me = httpx.get(f"{b}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["username"] == "admin", me.text  # one key, one database
        _revocation_and_rate_limit_span_both_gateways(a, b, token)

        os.kill(_child_pid(proc.pid, "auth_api", http), signal.SIGKILL)
        _read_until(proc, "gateway restarted and ready", lines)
        r = httpx.get(f"{a}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        metrics = httpx.get(f"http://127.0.0.1:{env['MLSTACK_SUPERVISOR_METRICS_PORT']}/metrics").text
        assert 'mlstack_tier_restarts_total{tier="gateway"} 1.0' in metrics
        assert 'mlstack_tier_restarts_total{tier="ingester"} 0.0' in metrics
        assert 'mlstack_tier_replicas_up{tier="gateway"} 2.0' in metrics

        # Something else takes the first gateway's port while it is down: every restart fails, the budget runs out.
        with socket.socket() as squatter:
            os.kill(_child_pid(proc.pid, "auth_api", http), signal.SIGKILL)
            _bind_when_free(squatter, http)
            out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + out
    assert proc.returncode == 1, text
    assert "killed by signal SIGKILL" in text and "error: gateway keeps failing (2 restarts" in text, text
    assert "address already in use" in text.split("keeps failing")[1], text
    assert text.index("stopping gateway-2") < text.index("stopping ingester"), text


REDIS_DB = "redis://127.0.0.1:6379/9"
BURST = 25  # no refill (0.001/s): a bucket holds BURST requests in all


def _forget_rate_limits() -> None:
    forget(REDIS_DB, "mlstack:rl:*")


def _revocation_and_rate_limit_span_both_gateways(a: str, b: str, admin_token: str) -> None:
    """Issue 18 item 4 across two gateway processes on two ports: a key revoked through A is refused by B within 100 ms;
    one user's rate limit holds for A and B together."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=a, headers=admin, timeout=10) as ca, httpx.Client(base_url=b, timeout=10) as cb:
        created = ca.post("/api/v1/api-keys", json={"name": "k", "scopes": ["predict"]})
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        assert cb.get("/api/v1/auth/me", headers=key).status_code == 200  # B has the key cached now
        assert ca.delete(f"/api/v1/api-keys/{created.json()['id']}").status_code == 200
        t0 = time.monotonic()
        while (code := cb.get("/api/v1/auth/me", headers=key).status_code) == 200:
            assert time.monotonic() - t0 < 2.0, "gateway B still accepts the key revoked through A"
            time.sleep(0.005)  # at most ~20 polls in 100 ms: the key's own bucket (BURST) cannot run dry first
        assert code == 401 and time.monotonic() - t0 < 0.1, (code, time.monotonic() - t0)

        r = ca.post("/api/v1/users", json={"username": "limited", "password": PASSWORD, "role": "user"})
        assert r.status_code == 201, r.text
        login = cb.post("/api/v1/auth/login", json={"username": "limited", "password": PASSWORD})
        assert login.status_code == 200, login.text
        user = {"Authorization": f"Bearer {login.json()['access_token']}"}
        codes: dict[str, list[int]] = {a: [], b: []}
        for i in range(BURST + 15):  # alternating: the user's requests split evenly over the two gateways
            c = ca if i % 2 == 0 else cb
            codes[str(c.base_url).rstrip("/")].append(c.get("/api/v1/auth/me", headers=user).status_code)
        every = codes[a] + codes[b]
        assert every.count(200) == BURST and every.count(429) == 15, codes  # one bucket for both, not BURST each
        assert 429 in codes[a] and 429 in codes[b], codes


def _child_pid(parent: int, module: str, port: int) -> int:
    """The pid of ``python -m <module>`` among ``parent``'s children, the one started with ``port`` as its HTTP port."""
    for child in psutil.Process(parent).children():
        if child.cmdline()[-2:] == ["-m", module] and child.environ().get("MLSTACK_GATEWAY_HTTP_PORT") == str(port):
            return int(child.pid)
    raise AssertionError(f"no child running {module} on port {port}")


def _bind_when_free(sock: socket.socket, port: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            return
        except OSError:
            assert time.monotonic() < deadline, f"port {port} never freed"
            time.sleep(0.01)


def test_replica_plan_ports_and_redis_requirement() -> None:
    from mlstack.replicas import ReplicaError, plan
    from mlstack.settings import Settings

    base = Settings.model_construct()
    with pytest.raises(ReplicaError, match="MLSTACK_REDIS_URL"):
        plan(base, gateways=2)
    p = plan(base.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}), tritons=2, gateways=2)
    # gRPC moves past the HTTP ports and the ingester's and supervisor's metrics ports (8082, 8083)
    assert [(g.gateway_http_port, g.gateway_grpc_port) for g in p.gateways] == [(8080, 8084), (8081, 8085)]
    assert [(t.triton_http_port, t.triton_grpc_port, t.triton_metrics_port) for t in p.tritons] == [(8000, 8001, 8002),
                                                                                                     (8003, 8004, 8005)]
    if "triton_urls" in Settings.model_fields:  # the gateways balance over every Triton
        assert all(g.triton_urls == "http://127.0.0.1:8000,http://127.0.0.1:8003" for g in p.gateways)
    assert plan(base).gateways[0] == base
    with pytest.raises(ReplicaError, match="MLSTACK_INGESTER_METRICS_PORT=8082"):
        plan(base.model_copy(update={"redis_url": "redis://x"}), gateways=3)

