"""Start, probe and stop a local Prometheus (Debian's ``prometheus`` package) for `mlstack up --with-prometheus` and tests."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from pathlib import Path

import httpx

from mlstack.errors import MlstackError
from mlstack.process import Launcher, ManagedProcess, read_log
from mlstack.settings import Settings
from monitoring.config import Target, write_local_config

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install -y --no-install-recommends prometheus` (Debian's package gives prometheus and promtool)"


class PrometheusError(MlstackError):
    """Prometheus is missing, its config is invalid, or it did not become ready."""

    code = "prometheus_failed"
    status = 503


def find_binary(name: str = "prometheus") -> str:
    """Path of ``prometheus`` or ``promtool``; PrometheusError with the install hint when missing."""
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"{name} not found on PATH: {INSTALL_HINT}", details={"binary": name})
    return path


class PrometheusServer(Launcher):
    """A Prometheus process on ``settings.prometheus_port`` (loopback) scraping ``targets`` (default: the local stack).

    The config is rendered to ``config_path`` (default ``var_dir/prometheus/prometheus.yml``), the TSDB lives in
    ``var_dir/prometheus/data`` and the log in ``var_dir/logs/prometheus.log``.
    """

    def __init__(self, settings: Settings, config_path: Path | None = None, targets: list[Target] | None = None,
                 host: str = "127.0.0.1") -> None:
        self.settings = settings
        self.host = host
        self.targets = targets
        var = Path(settings.var_dir)
        self.config_path = Path(config_path) if config_path is not None else var / "prometheus" / "prometheus.yml"
        self.data_dir = var / "prometheus" / "data"
        self.log_path = var / "logs" / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.settings.prometheus_port}"

    def command(self) -> list[str]:
        return [find_binary("prometheus"), f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address={self.host}:{self.settings.prometheus_port}", "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=7d", "--log.level=warn"]

    def check_config(self) -> None:
        """`promtool check config` on the rendered file (and its rule files); PrometheusError naming the problem."""
        proc = subprocess.run([find_binary("promtool"), "check", "config", str(self.config_path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PrometheusError(f"invalid Prometheus config {self.config_path}: {(proc.stdout + proc.stderr).strip()}",
                                  details={"config": str(self.config_path)})

    def start(self, timeout: float | None = None) -> None:
        """Render the config, validate it, spawn Prometheus and wait for ``/-/ready`` (default 30 s)."""
        if self.is_running():
            return
        write_local_config(self.settings, self.config_path, self.targets)
        self.check_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.managed = ManagedProcess("prometheus", self.command(), ready_url=f"{self.url}/-/ready", log_path=self.log_path,
                                      url=self.url, cause=_log_tail, error=PrometheusError, stop_timeout_s=10.0)
        self.managed.start(30.0 if timeout is None else timeout)

    def ready(self, client: httpx.Client | None = None) -> bool:
        """True when Prometheus answers ``/-/ready`` with 200."""
        with contextlib.ExitStack() as stack:
            c = client or stack.enter_context(httpx.Client(timeout=2.0))
            try:
                return c.get(f"{self.url}/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

    def reload(self) -> None:
        """Re-render the config and ask the running Prometheus to reload it (targets changed)."""
        write_local_config(self.settings, self.config_path, self.targets)
        self.check_config()
        httpx.post(f"{self.url}/-/reload", timeout=5.0).raise_for_status()


def _log_tail(path: Path, offset: int, lines: int = 5) -> str:
    try:
        tail = read_log(path, offset).strip().splitlines()[-lines:]
    except OSError:
        return "no log"
    return " | ".join(tail) or "empty log"
