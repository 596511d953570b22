"""Prometheus config and alert rules pass promtool, every alert has a unit test, dashboards match their generator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from mlstack.settings import Settings
from monitoring.config import ALERTS_FILE, COMPOSE_CONFIG, PROMETHEUS_DIR, local_targets, render_config, write_local_config
from monitoring.dashboards import DASHBOARD_DIR, render_all

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False)


def test_compose_config_and_rules_are_valid(promtool: str) -> None:
    proc = _promtool(promtool, "check", "config", str(COMPOSE_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _promtool(promtool, "check", "rules", str(ALERTS_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool rule tests in monitoring/prometheus/tests"
    proc = _promtool(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for f in RULE_TESTS for t in yaml.safe_load(f.read_text())["tests"]
              for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing test case: {sorted(alerts - tested)}"
    assert {"TargetDown", "ModelNotReady", "TritonErrorRatioHigh", "GatewayErrorRatioHigh",
            "GatewayLatencyP99AboveSLO", "HistoryIngestLagging"} <= alerts


def test_local_config_uses_the_settings_ports(promtool: str, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, triton_metrics_port=18002, gateway_http_port=18080, bento_port=13000,
                        prometheus_port=19090, prometheus_scrape_interval_s=0.5, supervisor_metrics_port=18083)
    path = write_local_config(settings)
    assert path == tmp_path / "prometheus" / "prometheus.yml"
    doc = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in doc["scrape_configs"]}
    assert jobs == {"triton": ["127.0.0.1:18002"], "gateway": ["127.0.0.1:18080"], "bento": ["127.0.0.1:13000"],
                    "prometheus": ["127.0.0.1:19090"], "supervisor": ["127.0.0.1:18083"]}
    assert doc["global"]["scrape_interval"] == "500ms"
    assert doc["rule_files"] == [str(ALERTS_FILE)]
    proc = _promtool(promtool, "check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_config_passes_the_gateway_metrics_token(promtool: str, tmp_path: Path) -> None:
    """With MLSTACK_GATEWAY_METRICS_TOKEN set, Prometheus sends it to the gateway (from a 0600 file, not the config)."""
    token = "scrape-me-0123456789"
    path = write_local_config(Settings(var_dir=tmp_path, gateway_metrics_token=token))
    jobs = {j["job_name"]: j for j in yaml.safe_load(path.read_text())["scrape_configs"]}
    auth = jobs["gateway"]["authorization"]
    token_file = Path(auth["credentials_file"])
    assert auth["type"] == "Bearer" and token_file.read_text() == token
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token not in path.read_text()
    assert all("authorization" not in jobs[j] for j in ("triton", "bento", "prometheus"))
    proc = _promtool(promtool, "check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    write_local_config(Settings(var_dir=tmp_path))  # token unset again: no credentials, no stale secret left behind
    assert "authorization" not in yaml.safe_load(path.read_text())["scrape_configs"][1]
    assert not token_file.exists()


def test_compose_and_local_configs_scrape_the_same_jobs() -> None:
    compose = {j["job_name"] for j in yaml.safe_load(COMPOSE_CONFIG.read_text())["scrape_configs"]}
    local = {j["job_name"] for j in yaml.safe_load(render_config(local_targets(Settings()), self_address="x:1"))["scrape_configs"]}
    # the supervisor exists only under `mlstack up` (compose restarts containers itself)
    assert compose == local - {"supervisor"} == {"triton", "gateway", "bento", "prometheus"} and "supervisor" in local


def test_dashboard_files_match_their_generator() -> None:
    for name, text in render_all().items():
        path = DASHBOARD_DIR / name
        assert path.exists() and path.read_text() == text, f"{path} is stale: run `python -m monitoring.dashboards`"
        dash = json.loads(text)
        assert dash["panels"] and all(p["targets"] and p["datasource"]["uid"] == "prometheus" for p in dash["panels"])
    titles = {json.loads(t)["title"] for t in render_all().values()}
    assert titles == {"Serving overview", "Gateway", "Usage"}
