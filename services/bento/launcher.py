"""Start, watch and stop ``bentoml serve services.bento.service:TaskService`` for `mlstack up` and the tests.

The server runs in its own process group (BentoML spawns one process per service worker), so stopping it ends
them all; its settings reach it as ``MLSTACK_*`` environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from mlstack.errors import MlstackError
from mlstack.process import Launcher, ManagedProcess, port_in_use, read_log
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

SERVICE = "services.bento.service:TaskService"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
KILL_GRACE_S = 10.0
LOG_TAIL_LINES = 30


class BentoStartError(MlstackError):
    """The BentoML service did not become ready; the message quotes its log."""

    code = "bento_start_failed"
    status = 503


def pid_file(settings: Settings) -> Path:
    return Path(settings.var_dir) / "run" / "bento.pid"


def log_file(settings: Settings) -> Path:
    return Path(settings.var_dir) / "logs" / "bento.log"



def settings_env(settings: Settings, repository: Path) -> dict[str, str]:
    """The settings as MLSTACK_* variables (secrets left out: the task service needs none)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None or name in ("jwt_secret", "admin_password") or "secret" in name or "password" in name:
            continue
        env[f"MLSTACK_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    env["MLSTACK_REPOSITORY"] = str(Path(repository).resolve())
    env["MLSTACK_VAR_DIR"] = str(Path(settings.var_dir).resolve())
    return env


class BentoServer(Launcher):
    """One ``bentoml serve`` process for the task service on ``settings.bento_host:bento_port``."""

    def __init__(self, settings: Settings, repository: Path | None = None) -> None:
        self.settings = settings
        self.repository = Path(repository if repository is not None else settings.repository).resolve()
        self.log_path = log_file(settings)

    @property
    def url(self) -> str:
        return f"http://{self.settings.bento_host}:{self.settings.bento_port}"

    def command(self) -> list[str]:
        bentoml = Path(sys.executable).parent / "bentoml"
        prog = [str(bentoml)] if bentoml.exists() else [sys.executable, "-m", "bentoml"]
        return [*prog, "serve", SERVICE, "--host", self.settings.bento_host, "--port", str(self.settings.bento_port),
                "--working-dir", str(PROJECT_ROOT)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTACK_")}
        env.update(settings_env(self.settings, self.repository))
        env.setdefault("BENTOML_HOME", str(Path(self.settings.var_dir).resolve() / "bentoml"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        env["BENTOML_DO_NOT_TRACK"] = "True"
        return env

    def start(self, timeout: float | None = None) -> None:
        """Spawn the server and wait for /readyz; BentoStartError quotes the log otherwise."""
        if self.is_running():
            return
        s = self.settings
        timeout = s.bento_startup_timeout_s if timeout is None else timeout
        if not self.repository.is_dir():
            raise BentoStartError(f"model repository {self.repository} does not exist", details={"repository": str(self.repository)})
        if port_in_use(s.bento_host, s.bento_port):
            raise BentoStartError(f"port {s.bento_host}:{s.bento_port} is already in use; set MLSTACK_BENTO_PORT or stop "
                                  "what holds it", details={"port": s.bento_port})
        self.managed = ManagedProcess("bentoml serve", self.command(), ready_url=f"{self.url}/readyz", log_path=self.log_path,
                                      url=self.url, env=self.env(), cwd=PROJECT_ROOT, cause=_log_tail, error=BentoStartError,
                                      pid_path=pid_file(s), stop_timeout_s=KILL_GRACE_S, poll_s=0.3)
        self.managed.start(timeout)


def _log_tail(path: Path, offset: int) -> str:
    try:
        lines = read_log(path, offset).splitlines()
    except OSError:
        return f"no log at {path}"
    return f"log {path}:\n" + "\n".join(lines[-LOG_TAIL_LINES:])
