"""The local Prometheus launcher: starts on the configured port, scrapes itself, names the cause when it cannot start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlstack.settings import Settings
from monitoring.launcher import PrometheusError, PrometheusServer
from monitoring.query import QueryError, active_targets, instant
from tests.fixtures.triton import free_ports
from tests.monitoring.live import wait_targets_up


def _settings(tmp_path: Path, port: int) -> Settings:
    return Settings(var_dir=tmp_path / "var", prometheus_port=port, prometheus_scrape_interval_s=0.5)


def test_start_ready_query_and_stop(prometheus_binary: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    server = PrometheusServer(_settings(tmp_path, port), targets=[])
    with server:
        assert server.ready() and server.url == f"http://127.0.0.1:{port}"
        wait_targets_up(server, {"prometheus"})
        assert {t["labels"]["job"] for t in active_targets(server.url)} == {"prometheus"}
        assert instant(server.url, "1 + 1")[0]["value"][1] == "2"
        with pytest.raises(QueryError, match="parse error"):
            instant(server.url, "sum(")
        proc = server.process
    assert proc is not None and proc.poll() is not None, "prometheus still running after stop()"
    assert not server.ready()
    assert (tmp_path / "var" / "prometheus" / "prometheus.yml").exists()


def test_busy_port_fails_with_the_cause(prometheus_binary: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = PrometheusServer(_settings(tmp_path, port), targets=[])
        with pytest.raises(PrometheusError, match="address already in use"):
            server.start(timeout=20)
        assert not server.is_running()
