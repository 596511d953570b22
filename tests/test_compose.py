"""docker-compose.yml cannot run here (no Docker): check it agrees with the settings, the launcher and the repo layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlstack.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEFAULTS = Settings.model_construct()  # field defaults only: neither the environment nor .env


def _ports(service: str) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for spec in SERVICES[service].get("ports", []):
        host, container = str(spec).split(":")[-2:]
        out[int(container)] = int(host)
    return out


def test_triton_is_published_on_loopback_only() -> None:
    """Triton accepts any tensor from any caller: only the gateway (same network) and the host's loopback reach it."""
    for name in ("triton", "triton-gpu"):
        specs = [str(s) for s in SERVICES[name].get("ports", [])]
        assert specs and all(s.startswith("127.0.0.1:") for s in specs), (name, specs)


GATEWAYS = {"gateway", "gateway-2"}  # the only public endpoints (docker-compose.scale.yml adds the second)


def test_only_the_gateways_are_published_beyond_loopback() -> None:
    """BentoML has no authentication, Triton trusts its callers, Prometheus runs with the lifecycle API, the Locust UI
    starts load tests: in both compose files only the gateways listen on every interface of the host."""
    scale = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())["services"]
    published = 0
    for services in (SERVICES, scale):
        for name, svc in services.items():
            for spec in svc.get("ports", []):
                assert isinstance(spec, str | int), (name, spec)  # the short syntax: a host address is visible
                if name not in GATEWAYS:
                    assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} on every interface"
                    published += 1
    for name in ("bento", "prometheus", "grafana", "locust-master"):
        assert SERVICES[name]["ports"], name  # still reachable from the host itself
    assert published >= 7
    assert all(not str(p).startswith("127.0.0.1:") for p in SERVICES["gateway"]["ports"] + scale["gateway-2"]["ports"])


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def test_every_image_is_pinned() -> None:
    for name, svc in SERVICES.items():
        image = svc.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned to a version"
    assert SERVICES["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and SERVICES["gateway"]["image"] == f"mlstack:{version.group(1)}"
    assert (ROOT / SERVICES["gateway"]["build"]["dockerfile"]).exists()


def test_required_services_and_profiles() -> None:
    expected = {"triton", "triton-gpu", "bento", "gateway", "postgres", "prometheus", "grafana", "locust-master", "locust-worker"}
    assert expected <= set(SERVICES)
    assert SERVICES["triton"]["profiles"] == ["cpu"] and SERVICES["triton-gpu"]["profiles"] == ["gpu"]
    devices = SERVICES["triton-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "triton" in SERVICES["triton-gpu"]["networks"]["default"]["aliases"]


def test_ports_agree_with_settings_defaults() -> None:
    tri = {DEFAULTS.triton_http_port, DEFAULTS.triton_grpc_port, DEFAULTS.triton_metrics_port}
    for name in ("triton", "triton-gpu"):
        assert {c for c, h in _ports(name).items() if c == h} == tri
    assert _ports("gateway") == {DEFAULTS.gateway_http_port: DEFAULTS.gateway_http_port,
                                 DEFAULTS.gateway_grpc_port: DEFAULTS.gateway_grpc_port}
    assert _ports("bento") == {DEFAULTS.bento_port: DEFAULTS.bento_port}
    assert _ports("prometheus") == {DEFAULTS.prometheus_port: DEFAULTS.prometheus_port}
    assert _ports("grafana") == {3000: DEFAULTS.grafana_port}


@pytest.mark.parametrize("name", ["triton", "triton-gpu"])
def test_triton_command_matches_the_launcher(name: str) -> None:
    """Same flags as services/triton/launcher.py derives from the default settings (paths and addresses aside)."""
    from services.triton.launcher import TritonServer

    compose = _flags(SERVICES[name]["command"])
    try:
        local = _flags(TritonServer(DEFAULTS).command())
    except Exception as exc:  # the binary is located to build argv; say so instead of a bare traceback
        pytest.fail(f"cannot derive the launcher's tritonserver flags: {exc}", pytrace=False)
    for flag in ("http-port", "grpc-port", "metrics-port", "model-control-mode", "repository-poll-secs", "strict-readiness",
                 "exit-on-error",
                 "exit-timeout-secs", "cache-config", "allow-metrics"):
        assert compose.get(flag) == local.get(flag), f"{name}: --{flag} is {compose.get(flag)!r}, the launcher uses {local.get(flag)!r}"
    assert compose["model-repository"] == "/models"
    assert ("model-config-name" in compose) == (name == "triton-gpu") and compose.get("model-config-name", "gpu") == "gpu"
    assert "./model_repository:/models:ro" in SERVICES[name]["volumes"]


def test_app_environment_names_real_settings() -> None:
    fields = set(Settings.model_fields)
    for name in ("gateway", "bento"):
        env = SERVICES[name]["environment"]
        for key, value in env.items():
            assert key.startswith("MLSTACK_"), f"{name}: {key}"
            assert key.removeprefix("MLSTACK_").lower() in fields, f"{name}: {key} is not a Settings field"
            if key.endswith("_PORT") and value.isdigit():
                assert int(value) == getattr(DEFAULTS, key.removeprefix("MLSTACK_").lower()), f"{name}: {key}={value}"
        assert env["MLSTACK_TRITON_HOST"] == "triton" and env["MLSTACK_REPOSITORY"] == "/models"


def test_secrets_have_no_defaults() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var in ("MLSTACK_JWT_SECRET", "MLSTACK_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        refs = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert refs and all(r.startswith(":?") for r in refs), f"{var} must be required (${{{var}:?...}}), got {refs}"


def test_commands_and_mounts_point_at_real_files() -> None:
    assert SERVICES["gateway"]["command"] == ["python", "-m", "auth_api"]
    bento = SERVICES["bento"]["command"]
    from services.bento.launcher import SERVICE

    assert SERVICE in bento and str(DEFAULTS.bento_port) in bento
    assert "./model_repository:/models:ro" in SERVICES["bento"]["volumes"]
    for name in ("prometheus", "grafana"):
        for vol in SERVICES[name]["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).is_dir(), f"{name} mounts missing {src}"
    assert (ROOT / "monitoring/prometheus/prometheus.yml").exists()
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    for svc in ("locust-master", "locust-worker"):
        locustfile = SERVICES[svc]["command"][2].removeprefix("/app/")
        assert (ROOT / locustfile).exists(), f"{svc} runs missing {locustfile}"
    scraped = {t for job in yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())["scrape_configs"]
               for t in job["static_configs"][0]["targets"]}
    assert {f"triton:{DEFAULTS.triton_metrics_port}", f"gateway:{DEFAULTS.gateway_http_port}", f"bento:{DEFAULTS.bento_port}"} <= scraped
