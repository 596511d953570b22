"""Helpers for the live dashboard tests: a loopback Prometheus, traffic generators, and the panel queries."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mlstack.settings import Settings
from monitoring.config import Target
from monitoring.dashboards import DASHBOARD_DIR, panel_queries, substitute
from monitoring.launcher import PrometheusServer
from monitoring.query import active_targets, instant
from tests.fixtures.triton import free_ports

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
_METRIC_NAME = re.compile(r"\b((?:nv|gateway|bentoml)_[a-z_]+)")


def all_panel_queries() -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, expr)`` for every target of every dashboard."""
    return [(f.name, title, expr) for f in sorted(DASHBOARD_DIR.glob("*.json"))
            for title, expr in panel_queries(json.loads(f.read_text()))]


def metric_families(expr: str) -> set[str]:
    """Which exporters a query needs: ``{"nv"}``, ``{"gateway"}``, ``{"bentoml"}`` or a mix."""
    return {name.split("_", 1)[0] for name in _METRIC_NAME.findall(expr)}


@contextlib.contextmanager
def prometheus(tmp_path: Path, targets: list[Target]) -> Iterator[PrometheusServer]:
    """A real Prometheus on a free loopback port scraping ``targets`` every 0.5 s."""
    (port,) = free_ports(1)
    settings = Settings(var_dir=tmp_path / "prom_var", prometheus_port=port, prometheus_scrape_interval_s=0.5)
    with PrometheusServer(settings, targets=targets) as prom:
        yield prom


def wait_targets_up(prom: PrometheusServer, jobs: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        health = {t["labels"]["job"]: (t["health"], t.get("lastError", "")) for t in active_targets(prom.url)}
        if all(health.get(j, ("", ""))[0] == "up" for j in jobs):
            return
        assert time.monotonic() < deadline, f"scrape targets not up after {timeout:.0f}s: {health}"
        time.sleep(0.5)


def missing_data(prom: PrometheusServer, queries: list[tuple[str, str, str]], timeout: float = 30.0) -> list[str]:
    """Queries that still return no samples after ``timeout`` (rate() needs a few scrapes after traffic)."""
    pending = list(queries)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [q for q in pending if not instant(prom.url, substitute(q[2], rate_interval="30s", range_="10m"))]
        if pending:
            time.sleep(1.0)
    return [f"{dash} / {title}: {expr}" for dash, title, expr in pending]


def v2_body(row: list[float]) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


def triton_traffic(http_url: str, model: str = "iris-logreg", requests: int = 400, concurrency: int = 16,
                   headers: dict[str, str] | None = None) -> None:
    """Concurrent single-row requests, half of them identical (cache hits), plus one bad request."""
    def one(i: int) -> int:
        row = IRIS_ROW if i % 2 else [float(i % 50) / 10, 3.0, 1.5, 0.2]
        return client.post(f"/v2/models/{model}/infer", json=v2_body(row)).status_code

    with httpx.Client(base_url=http_url, headers=headers or {}, timeout=30,
                      limits=httpx.Limits(max_connections=concurrency)) as client, ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(one, range(requests)))
        assert codes.count(200) == requests, f"traffic failed: {sorted(set(codes))}"
        bad = client.post(f"/v2/models/{model}/infer", json=v2_body([1.0, 2.0]))
        assert bad.status_code == 400, bad.text


@contextlib.contextmanager
def gateway_process(settings: Settings, log: Path) -> Iterator[str]:
    """``python -m auth_api`` as its own process (what `mlstack up` runs), configured via MLSTACK_* env."""
    env = {**os.environ, "MLSTACK_VAR_DIR": str(settings.var_dir), "MLSTACK_REPOSITORY": str(settings.repository),
           "MLSTACK_TRITON_HOST": settings.triton_host, "MLSTACK_TRITON_HTTP_PORT": str(settings.triton_http_port),
           "MLSTACK_TRITON_GRPC_PORT": str(settings.triton_grpc_port),
           "MLSTACK_GATEWAY_HOST": "127.0.0.1", "MLSTACK_GATEWAY_HTTP_PORT": str(settings.gateway_http_port),
           "MLSTACK_GATEWAY_GRPC_PORT": str(settings.gateway_grpc_port),
           "MLSTACK_ADMIN_PASSWORD": settings.admin_password.get_secret_value() if settings.admin_password else "",
           "MLSTACK_GATEWAY_HISTORY_FLUSH_INTERVAL_S": "0.05",
           "MLSTACK_GATEWAY_PREDICTION_CACHE": "true" if settings.gateway_prediction_cache else "false",
           "MLSTACK_GATEWAY_METRICS_TOKEN": settings.gateway_metrics_token.get_secret_value() if settings.gateway_metrics_token else ""}
    url = f"http://127.0.0.1:{settings.gateway_http_port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "auth_api"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"gateway exited with {proc.returncode}: {log.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"gateway not live after 60s: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
