"""`bentoml build` produces a Bento offline; the launcher fails clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlstack.settings import Settings
from services.bento.launcher import PROJECT_ROOT, BentoServer, BentoStartError
from tests.fixtures.triton import free_ports


def test_bentoml_build_succeeds_offline(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "PIP_NO_INDEX": "1"}  # no package index: the build must not need one
    bentoml = Path(sys.executable).parent / "bentoml"
    proc = subprocess.run([str(bentoml), "build", "--output", "tag"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (bento_dir,) = [p for p in (tmp_path / "bentoml" / "bentos" / "mlstack-tasks").iterdir() if p.name != "latest"]
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["service"] == "services.bento.service:TaskService"
    assert {s["name"] for s in info["services"]} == {"mlstack-tasks", "mlstack-tensors"}
    routes = {r["name"] for r in info["schema"]["routes"]}
    assert {"classify_image", "predict_records", "explain", "simulate_battery", "models", "health"} <= routes
    src = bento_dir / "src"
    for rel in ("services/bento/service.py", "services/bento/runners.py", "mlstack/settings.py", "training/battery_sim.py",
                "model_repository/README.md"):
        assert (src / rel).is_file(), rel
    assert not list(src.rglob("__pycache__"))


def test_launcher_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = Settings(repository=tmp_path, var_dir=tmp_path / "var", bento_port=port)
        with pytest.raises(BentoStartError, match="already in use"):
            BentoServer(settings).start()


def test_launcher_quotes_the_log_when_the_server_dies(tmp_path: Path) -> None:
    class Broken(BentoServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; print('cannot import services.bento.service: boom'); sys.exit(3)"]

    (port,) = free_ports(1)
    server = Broken(Settings(repository=tmp_path, var_dir=tmp_path / "var", bento_port=port))
    with pytest.raises(BentoStartError) as info:
        server.start(timeout=30)
    assert "code 3" in info.value.message and "boom" in info.value.message
    assert server.process is None


def test_launcher_needs_a_repository(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with pytest.raises(BentoStartError, match="does not exist"):
        BentoServer(Settings(repository=tmp_path / "missing", var_dir=tmp_path / "var", bento_port=port)).start()
