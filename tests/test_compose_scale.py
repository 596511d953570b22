"""docker-compose.scale.yml (2 Tritons × 2 gateways on Redis) cannot run here: check it agrees with docker-compose.yml,
the settings and itself."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mlstack.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
SCALE = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())["services"]


def test_scale_override_adds_redis_a_second_triton_and_gateway_that_match_the_first() -> None:
    fields = set(Settings.model_fields)
    for name in ("bento", "gateway", "gateway-2"):
        env = SCALE[name]["environment"]
        assert env["MLSTACK_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["MLSTACK_TRITON_URLS"] == "http://triton:8000,http://triton-2:8000", name
        assert env["MLSTACK_TRITON_GRPC_URLS"] == "triton:8001,triton-2:8001", name
        assert all(k.removeprefix("MLSTACK_").lower() in fields for k in env), name
    # gateway-2 runs exactly what gateway runs, plus the shared state
    base_gw, gw2 = BASE["gateway"], SCALE["gateway-2"]
    assert gw2["command"] == base_gw["command"] and gw2["image"] == base_gw["image"]
    assert {k: v for k, v in gw2["environment"].items() if k in base_gw["environment"]} == base_gw["environment"]
    assert sorted(base_gw["profiles"]) == sorted(gw2["profiles"])
    assert [str(p).split(":")[-1] for p in gw2["ports"]] == ["8080", "8081"] and "8080:8080" not in gw2["ports"]
    # the second Triton runs the first one's command, in the same image and profile, unpublished
    for first, second in (("triton", "triton-2"), ("triton-gpu", "triton-gpu-2")):
        assert SCALE[second]["command"] == BASE[first]["command"], second
        assert SCALE[second]["image"] == BASE[first]["image"] and SCALE[second]["profiles"] == BASE[first]["profiles"]
        assert "ports" not in SCALE[second] and SCALE[second]["volumes"] == BASE[first]["volumes"]
    assert "triton-2" in SCALE["triton-gpu-2"]["networks"]["default"]["aliases"]
    assert SCALE["triton-gpu-2"]["deploy"] == BASE["triton-gpu"]["deploy"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-\w+", SCALE["redis"]["image"]) and "ports" not in SCALE["redis"]
    text = (ROOT / "docker-compose.scale.yml").read_text()
    for var in ("MLSTACK_JWT_SECRET", "MLSTACK_ADMIN_PASSWORD", "POSTGRES_PASSWORD"):
        refs = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert refs and all(r.startswith(":?") for r in refs), var
