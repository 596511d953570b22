"""Start, watch and stop the embedded tritonserver (the nvidia-pytriton wheel's binary) for `mlstack up/down`.

The server runs in its own process group, so stopping it also ends its Python backend stubs; a pid file
under ``var_dir/run`` lets `mlstack down` in another shell stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mlstack.errors import MlstackError
from mlstack.process import Launcher, ManagedProcess, pid_alive, port_in_use
from mlstack.repository.remote import Remote, open_repository
from mlstack.settings import Settings
from services.triton.health import failed_models, health
from services.triton.install import INSTALL_HINT, TritonNotInstalled, backend_dir, find_dist, server_env
from services.triton.logs import cause_from_log

logger = logging.getLogger(__name__)

KILL_GRACE_S = 5.0


class TritonStartError(MlstackError):
    """tritonserver did not become ready; the message names the cause found in its log."""

    code = "triton_start_failed"
    status = 503


def pid_file(settings: Settings) -> Path:
    return Path(settings.var_dir) / "run" / "triton.pid"


def log_file(settings: Settings) -> Path:
    return Path(settings.var_dir) / "logs" / "triton.log"


class TritonServer(Launcher):
    """One tritonserver process serving ``repository`` (default ``settings.repository``) with ``settings``."""

    def __init__(self, settings: Settings, repository: Path | None = None, name: str = "triton") -> None:
        """``name`` names its log and pid file (``triton-2.log`` for a second replica under one var_dir)."""
        self.settings = settings
        self.repository = Path(repository if repository is not None else settings.repository).resolve()
        self.log_path = log_file(settings).with_name(f"{name}.log")
        self.pid_path = pid_file(settings).with_name(f"{name}.pid")

    # ---- URLs -------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return self.settings.triton_http_url

    @property
    def grpc_url(self) -> str:
        return self.settings.triton_grpc_url

    @property
    def metrics_url(self) -> str:
        return self.settings.triton_metrics_url

    # ---- command line -------------------------------------------------------------------
    def command(self) -> list[str]:
        """The full tritonserver argv derived from the settings."""
        s = self.settings
        dist = find_dist()
        argv = [
            str(dist.binary),
            f"--model-repository={self.repository_arg()}",
            f"--backend-directory={backend_dir(s.var_dir, dist)}",
            f"--cache-directory={dist.cache_dir}",
            f"--http-address={s.triton_host}", f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.triton_host}", f"--grpc-port={s.triton_grpc_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            f"--metrics-address={s.triton_host}", f"--metrics-port={s.triton_metrics_port}",
            f"--model-control-mode={s.triton_model_control_mode}",
            # One model that fails to load must not keep the others from serving nor the server from starting:
            # readiness is judged per model (repository index), not by the whole server.
            "--strict-readiness=false",
            "--exit-on-error=false",
            f"--exit-timeout-secs={s.triton_exit_timeout_s}",
            f"--log-verbose={s.triton_log_verbose}",
            # No GPU memory pools on a CPU box; the stock container on a GPU host keeps its defaults.
            "--pinned-memory-pool-byte-size=0",
        ]
        if s.triton_model_control_mode == "poll":
            argv.append(f"--repository-poll-secs={s.triton_poll_interval_s}")
        elif s.triton_model_control_mode == "explicit":
            argv.append("--load-model=*")
        if s.triton_cache_size > 0:
            argv.append(f"--cache-config=local,size={s.triton_cache_size}")
        return argv

    def repository_arg(self) -> str:
        """The folder, or the bucket Triton reads itself when the repository is on S3 (its folder is then a mirror)."""
        rem = Remote.from_settings(self.settings)
        return rem.triton_url() if rem is not None else str(self.repository)

    def env(self) -> dict[str, str]:
        env = server_env(find_dist())
        rem = Remote.from_settings(self.settings)
        return env | rem.triton_env() if rem is not None else env

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> None:
        """Spawn tritonserver and wait until it is ready; TritonStartError names the cause otherwise."""
        if self.is_running():
            return
        s = self.settings
        timeout = s.triton_startup_timeout_s if timeout is None else timeout
        if Remote.from_settings(s) is not None:
            open_repository(s)  # Triton reads the bucket; the mirror is what the other tiers read
        if not self.repository.is_dir():
            raise TritonStartError(f"model repository {self.repository} does not exist",
                                   details={"repository": str(self.repository)})
        for what, port in (("HTTP", s.triton_http_port), ("gRPC", s.triton_grpc_port), ("metrics", s.triton_metrics_port)):
            if port_in_use(s.triton_host, port):
                raise TritonStartError(f"{what} port {s.triton_host}:{port} is already in use; "
                                       f"set MLSTACK_TRITON_{what.upper()}_PORT or stop what holds it",
                                       details={"port": port, "endpoint": what})
        try:
            argv, env = self.command(), self.env()
        except TritonNotInstalled as exc:
            raise TritonStartError(exc.message, details=exc.details) from exc
        # SIGTERM goes to the server alone (it stops its backend stubs itself); the group is killed after the grace.
        self.managed = ManagedProcess(
            "tritonserver", argv, ready_url=f"{self.http_url}/v2/health/ready", log_path=self.log_path, url=self.http_url,
            env=env, ready=self._ready, cause=lambda path, offset: cause_from_log(path, offset=offset),
            error=TritonStartError, pid_path=self.pid_path, stop_timeout_s=s.triton_exit_timeout_s + KILL_GRACE_S,
            term_group=False)
        self.managed.start(timeout)
        for m in self.failed_models():
            logger.warning("model %s version %s failed to load and is not served: %s", m["name"], m["version"], m["reason"])

    def _ready(self, client: httpx.Client) -> bool:
        """Server ready and every model of the repository done loading (READY) or failed (UNAVAILABLE).

        Without strict readiness the server answers ready before its first loads are done; waiting for them keeps
        "started" meaning "serving what it can".
        """
        if client.get(f"{self.http_url}/v2/health/ready").status_code != 200:
            return False
        index = client.post(f"{self.http_url}/v2/repository/index", json={})
        return index.status_code == 200 and all(m.get("state") in ("READY", "UNAVAILABLE") for m in index.json())

    def health(self) -> dict:
        return health(self.settings)

    def failed_models(self) -> list[dict]:
        """Versions Triton tried and failed to load (``{"name", "version", "reason"}``); the others serve regardless."""
        return failed_models(self.health())


def _terminate(pid: int, timeout: float, wait=None) -> None:
    """Stop tritonserver ``pid`` (leader of its own process group) and anything left in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    if wait is not None:
        try:
            wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("tritonserver %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
    else:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    # The group id is the server's pid (start_new_session); stubs left behind die with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if wait is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait(timeout=5)


def _remove_pid_file(settings: Settings, pid: int) -> None:
    path = pid_file(settings)
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == pid:
            path.unlink()


def running_pid(settings: Settings) -> int | None:
    """The pid in the pid file if it is a live tritonserver; a stale pid file is removed and None returned."""
    path = pid_file(settings)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    if not cmdline or not cmdline[0].endswith(b"tritonserver") or not pid_alive(pid):
        logger.warning("removing stale pid file %s (pid %d is not a tritonserver)", path, pid)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return pid


def stop_from_pidfile(settings: Settings) -> bool:
    """Stop the tritonserver recorded in the pid file (e.g. from another shell); False when none runs."""
    pid = running_pid(settings)
    if pid is None:
        return False
    logger.info("stopping tritonserver %d", pid)
    _terminate(pid, settings.triton_exit_timeout_s + KILL_GRACE_S)
    _remove_pid_file(settings, pid)
    return True


__all__ = ["INSTALL_HINT", "TritonServer", "TritonStartError", "health", "log_file", "pid_file", "running_pid",
           "stop_from_pidfile"]
