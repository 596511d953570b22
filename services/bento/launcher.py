"""Start, watch and stop ``bentoml serve services.bento.service:TaskService`` for `mlstack up` and the tests.

The server runs in its own process group (BentoML spawns one process per service worker), so stopping it ends
them all; its settings reach it as ``MLSTACK_*`` environment variables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from mlstack.errors import MlstackError
from mlstack.process import port_in_use, read_log, start_log
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


class BentoServer:
    """One ``bentoml serve`` process for the task service on ``settings.bento_host:bento_port``."""

    def __init__(self, settings: Settings, repository: Path | None = None) -> None:
        self.settings = settings
        self.repository = Path(repository if repository is not None else settings.repository).resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_file(settings)
        self.log_offset = 0  # where this run's output starts in log_path (the log is appended to)

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
        if self.process is not None and self.process.poll() is None:
            return
        s = self.settings
        timeout = s.bento_startup_timeout_s if timeout is None else timeout
        if not self.repository.is_dir():
            raise BentoStartError(f"model repository {self.repository} does not exist", details={"repository": str(self.repository)})
        if port_in_use(s.bento_host, s.bento_port):
            raise BentoStartError(f"port {s.bento_host}:{s.bento_port} is already in use; set MLSTACK_BENTO_PORT or stop "
                                  "what holds it", details={"port": s.bento_port})
        argv = self.command()
        logger.info("starting BentoML task service: %s", " ".join(argv))
        self.log_offset = start_log(self.log_path, argv)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, env=self.env(), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        pid_file(s).parent.mkdir(parents=True, exist_ok=True)
        pid_file(s).write_text(f"{self.process.pid}\n")
        try:
            self._wait_ready(timeout)
        except BentoStartError:
            self.stop()
            raise

    def _log_tail(self) -> str:
        try:
            lines = read_log(self.log_path, self.log_offset).splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise BentoStartError(f"bentoml serve exited with code {code} before it was ready; log "
                                          f"{self.log_path}:\n{self._log_tail()}", details={"exit_code": code, "log": str(self.log_path)})
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        logger.info("BentoML task service ready at %s", self.url)
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BentoStartError(f"BentoML task service not ready after {timeout:g} s; log {self.log_path}:\n"
                                          f"{self._log_tail()}", details={"timeout_s": timeout, "log": str(self.log_path)})
                time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("BentoML task service did not stop in %g s; killing it", KILL_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.process = None
        pid_file(self.settings).unlink(missing_ok=True)

    def __enter__(self) -> BentoServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
