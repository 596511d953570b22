"""A child server process: spawned with its own log, waited on until an HTTP readiness URL answers, stopped cleanly.

Used by ``mlstack up`` for tiers that are plain commands (the gateway, Prometheus); Triton and BentoML have their
own launchers with the same start/stop/url shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

import httpx

from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)


class StartError(MlstackError):
    """A child server did not become ready; the message quotes the end of its log."""

    code = "start_failed"
    status = 503


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (bound with SO_REUSEADDR as servers do: TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# A log bigger than this is moved to ``<name>.log.1`` (replacing an older one) when its server starts again.
MAX_LOG_BYTES = 64 * 1024 * 1024


def start_log(path: Path, argv: Sequence[str]) -> int:
    """Append a start marker (time and command) to the log ``path`` and return the offset where this run's output begins.

    Logs are appended to, never truncated: the log an earlier failure pointed to is still there after a restart.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > MAX_LOG_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    with open(path, "ab") as log:
        log.write(f"\n===== {stamp} mlstack started: {shlex.join(argv)}\n".encode(errors="replace"))
        return log.tell()


def read_log(path: Path, offset: int = 0) -> str:
    """The log's text from ``offset`` (the start of the current run, see ``start_log``); OSError when unreadable."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_tail(path: Path, lines: int = 8, max_chars: int = 1500, offset: int = 0) -> str:
    """The last non-empty ``lines`` written since ``offset``."""
    try:
        text = read_log(path, offset)
    except OSError:
        return "(no log)"
    tail = "\n".join(line for line in text.splitlines() if line.strip())
    return "\n".join(tail.splitlines()[-lines:])[-max_chars:] or "(empty log)"


class ManagedProcess:
    """``argv`` run in its own process group, stdout+stderr to ``log_path``; ready when ``ready_url`` answers 200."""

    def __init__(self, name: str, argv: Sequence[str], *, ready_url: str, log_path: Path, url: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None, stop_timeout_s: float = 15.0) -> None:
        self.name, self.argv, self.ready_url, self.log_path, self.url = name, list(argv), ready_url, log_path, url
        self.env, self.cwd, self.stop_timeout_s = env, cwd, stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where this run's output starts in log_path

    def start(self, timeout: float | None = None) -> None:
        timeout = 60.0 if timeout is None else timeout
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        self.log_offset = start_log(self.log_path, self.argv)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise StartError(f"{self.name} could not be started: {exc}", details={"argv": self.argv}) from exc
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    self.process = None
                    raise StartError(f"{self.name} exited with code {code}: {log_tail(self.log_path, offset=self.log_offset)}",
                                     details={"exit_code": code, "log": str(self.log_path)})
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.ready_url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise StartError(f"{self.name} not ready after {timeout:.0f}s: {log_tail(self.log_path, offset=self.log_offset)}",
                                     details={"log": str(self.log_path)})
                time.sleep(0.2)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, self.stop_timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
