"""Two Triton replicas behind one gateway (MLSTACK_TRITON_URLS): both take traffic, one killed under 32 concurrent
clients costs no request (HTTP and gRPC), it comes back into the balance, and every prediction is one history row."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sqlalchemy import text

from services.triton.launcher import TritonServer
from tests.fixtures.gateway import gateway_settings, run_gateway
from tests.fixtures.triton import require_triton, triton_settings

MODEL = "iris-logreg"
CLIENTS = 32


def _metric(gw_url: str, token: str, name: str, upstream: str) -> float:
    text_ = httpx.get(f"{gw_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text
    total = 0.0
    for line in text_.splitlines():
        if line.startswith(name) and f'upstream="{upstream}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _load(url: str, token: str, stop: threading.Event, results: list[int]) -> None:
    rng = np.random.default_rng(0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=CLIENTS)) as client:
        async def one_client() -> None:
            while not stop.is_set():
                row = rng.uniform(0, 7, 4).round(2).tolist()
                body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
                try:
                    r = await client.post(f"/v2/models/{MODEL}/infer", json=body)
                    results.append(r.status_code)
                except httpx.HTTPError:
                    results.append(-1)

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


def test_a_replica_killed_under_load_costs_no_request(trained_repo: Path, tmp_path: Path) -> None:
    require_triton()
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / MODEL, repo / MODEL)
    sa, sb = (triton_settings(repo, tmp_path / f"var-{x}", triton_cache_size=0) for x in "ab")
    a, b = TritonServer(sa), TritonServer(sb)
    starts = [threading.Thread(target=s.start) for s in (a, b)]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    assert a.is_running() and b.is_running()
    url_a, url_b = sa.triton_http_url, sb.triton_http_url
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", repository=repo,
                                triton_urls=f"{url_a},{url_b}", triton_grpc_urls=f"{sa.triton_grpc_url},{sb.triton_grpc_url}",
                                gateway_upstream_health_interval_s=0.2, gateway_rate_limit_rps=0)
    try:
        with run_gateway(settings) as gw:
            token = gw.admin_token()
            stop, results = threading.Event(), []  # type: ignore[var-annotated]
            load = threading.Thread(target=lambda: asyncio.run(_load(gw.url, token, stop, results)))
            load.start()
            time.sleep(1.5)
            before_kill = len(results)
            assert _metric(gw.url, token, "gateway_upstream_calls", url_a) > 0
            assert _metric(gw.url, token, "gateway_upstream_calls", url_b) > 0, "both replicas take traffic"

            assert a.process is not None
            os.kill(a.process.pid, signal.SIGKILL)  # mid-flight: the calls it held are sent to b
            time.sleep(1.5)
            # gRPC through the gateway while a is dead: round_robin skips it, an UNAVAILABLE call is retried on b.
            with grpcclient.InferenceServerClient(gw.grpc_url) as g:
                for _ in range(20):
                    inp = grpcclient.InferInput("input", [1, 4], "FP32")
                    inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
                    res = g.infer(MODEL, [inp], headers={"authorization": f"Bearer {token}"})
                    assert res.as_numpy("label").reshape(-1)[0] == 0
            assert _metric(gw.url, token, "gateway_upstream_ready", url_a) == 0
            ready = httpx.get(f"{gw.url}/health/ready", timeout=10).json()
            assert ready["status"] == "ready", ready

            a.stop()
            a = TritonServer(sa)  # back on the same ports
            a.start()
            deadline = time.monotonic() + 20
            while _metric(gw.url, token, "gateway_upstream_ready", url_a) != 1:
                assert time.monotonic() < deadline, "the restarted replica was not put back in the balance"
                time.sleep(0.1)
            calls_back = _metric(gw.url, token, "gateway_upstream_calls", url_a)
            time.sleep(1.0)
            assert _metric(gw.url, token, "gateway_upstream_calls", url_a) > calls_back, "it takes traffic again"
            stop.set()
            load.join(timeout=60)

            failed = [s for s in results if s != 200]
            assert len(results) > before_kill + 100
            assert not failed, f"{len(failed)} of {len(results)} requests failed across the kill: {sorted(set(failed))}"
            retried = _metric(gw.url, token, "gateway_upstream_retried_away", url_a)
            gw.flush_history()
            with gw.state.engine.connect() as conn:
                rows = conn.execute(text("SELECT count(*) FROM predictions WHERE model = :m AND protocol = 'http'"),
                                    {"m": MODEL}).scalar_one()
            assert rows == len(results), f"history rows {rows} != predictions served {len(results)} (retried: {retried})"
    finally:
        for s in (a, b):
            s.stop()


@pytest.mark.parametrize("targets", [["127.0.0.1:8001"], ["127.0.0.1:8001", "localhost:9001"]])
def test_grpc_channel_target_for_one_or_several_replicas(targets: list[str]) -> None:
    from mlstack.grpc_targets import channel_target

    target, opts = channel_target(targets)
    if len(targets) == 1:
        assert (target, opts) == ("127.0.0.1:8001", [])
    else:
        assert target.startswith(("ipv4:127.0.0.1:8001,", "ipv4:127.0.0.1:8001,"))
        assert target.endswith(":9001") and dict(opts)["grpc.enable_retries"] == 1
