"""/health/ready reports each dependency (database, Triton, BentoML, Redis when configured) and whether it is required,
and answers fast whatever hangs behind it: a frozen (SIGSTOPped) Triton is "not responding" within about half a second."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.triton.launcher import TritonServer
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import free_ports, require_triton, triton_settings


@pytest.fixture(scope="module")
def own_triton(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of this module's own (one model), so freezing it disturbs no other test."""
    require_triton()
    base = tmp_path_factory.mktemp("ready_triton")
    repo = base / "model_repository"
    repo.mkdir()
    shutil.copytree(trained_repo / "iris-logreg", repo / "iris-logreg")
    server = TritonServer(triton_settings(repo, base / "var"))
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def _gateway(tmp_path: Path, triton: TritonServer, **overrides: Any) -> Any:
    s = triton.settings
    if "bento_port" not in overrides:
        overrides["bento_port"] = free_ports(1)[0]  # nothing listens: BentoML is down
    return run_gateway(gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", repository=triton.repository,
                                        triton_host=s.triton_host, triton_http_port=s.triton_http_port,
                                        triton_grpc_port=s.triton_grpc_port, **overrides))


def _ready(gw: RunningGateway) -> tuple[int, dict[str, Any], float]:
    start = time.perf_counter()
    r = httpx.get(f"{gw.url}/health/ready", timeout=10)
    elapsed = time.perf_counter() - start
    body = r.json()
    return r.status_code, (body["error"]["details"] if r.status_code == 503 else body), elapsed


def test_bento_down_is_reported_but_keeps_the_gateway_ready(tmp_path: Path, own_triton: TritonServer) -> None:
    with _gateway(tmp_path, own_triton) as gw:
        status, body, _ = _ready(gw)
    assert status == 200 and body["status"] == "ready", body
    deps = body["dependencies"]
    assert deps["database"]["state"] == "up" and deps["database"]["required"] is True
    assert deps["triton"]["state"] == "up" and deps["triton"]["required"] is True
    assert deps["bento"]["state"] == "down" and deps["bento"]["required"] is False
    assert "tasks" in deps["bento"]["impact"] and "unavailable" in deps["bento"]["impact"]
    assert body["degraded"] == ["bento"] and body["failing"] == []
    assert body["models"]["iris-logreg"]["state"] == "ready"  # per-model readiness is still there


def test_bento_up_is_reported(tmp_path: Path, own_triton: TritonServer, bento: BentoFixture) -> None:
    with _gateway(tmp_path, own_triton, bento_host=bento.settings.bento_host, bento_port=bento.settings.bento_port) as gw:
        status, body, _ = _ready(gw)
    assert status == 200 and body["dependencies"]["bento"]["state"] == "up" and body["degraded"] == [], body


def test_redis_is_reported_when_configured(tmp_path: Path, own_triton: TritonServer) -> None:
    (dead,) = free_ports(1)
    with _gateway(tmp_path, own_triton, redis_url=f"redis://127.0.0.1:{dead}/0") as gw:
        status, body, _ = _ready(gw)
    assert status == 200, body  # optional: the prediction cache degrades to misses
    assert body["dependencies"]["redis"]["state"] == "down" and body["dependencies"]["redis"]["required"] is False
    assert "redis" in body["degraded"]
    (tmp_path / "live").mkdir()
    with _gateway(tmp_path / "live", own_triton, redis_url="redis://127.0.0.1:6379/15") as gw:
        assert _ready(gw)[1]["dependencies"]["redis"]["state"] == "up"
    (tmp_path / "plain").mkdir()
    with _gateway(tmp_path / "plain", own_triton) as gw:
        assert "redis" not in _ready(gw)[1]["dependencies"]


def test_frozen_triton_answers_fast_as_not_responding(tmp_path: Path, own_triton: TritonServer) -> None:
    assert own_triton.process is not None
    pid = own_triton.process.pid
    with _gateway(tmp_path, own_triton) as gw:
        assert _ready(gw)[0] == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.6)  # past the cached result
            for _ in range(5):
                status, details, elapsed = _ready(gw)
                assert status == 503, details
                assert elapsed < 1.2, f"readiness took {elapsed:.2f} s with Triton frozen"
                assert details["failing"] == ["triton"]
                assert details["dependencies"]["triton"]["state"] == "not responding"
                assert details["dependencies"]["database"]["state"] == "up"
                time.sleep(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while _ready(gw)[0] != 200:
            assert time.monotonic() < deadline, "the gateway did not become ready again after Triton resumed"
            time.sleep(0.2)
