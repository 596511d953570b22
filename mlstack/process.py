"""A child server process: spawned with its own log, waited on until its readiness probe answers, stopped cleanly.

Every tier runs as one of these (Triton, BentoML, Prometheus through their launchers; the gateway and the ingester
directly); what differs per tier is the readiness probe and the hook that reads a failure's cause from its log.
``mlstack.supervisor`` restarts them when they die.
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
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

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


def pid_alive(pid: int) -> bool:
    """``pid`` runs on this host (a zombie, exited but not yet reaped by whoever started it, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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


Probe = Callable[[httpx.Client], bool]
CauseHook = Callable[[Path, int], str]


def http_ok(url: str) -> Probe:
    """A readiness probe: ``url`` answers 200."""
    def probe(client: httpx.Client) -> bool:
        return client.get(url).status_code == 200
    return probe


def exit_reason(code: int) -> str:
    """``exit code 3`` or ``killed by signal SIGKILL`` from a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"


class ManagedProcess:
    """``argv`` run in its own process group, stdout+stderr to ``log_path``; ready when ``ready`` (default: GET
    ``ready_url`` answers 200) says so. Failures raise ``error`` (StartError by default) quoting ``cause``'s reading
    of this run's log (default: its last lines)."""

    def __init__(self, name: str, argv: Sequence[str], *, ready_url: str, log_path: Path, url: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None, stop_timeout_s: float = 15.0,
                 ready: Probe | None = None, cause: CauseHook | None = None, error: type[MlstackError] = StartError,
                 pid_path: Path | None = None, poll_s: float = 0.2, term_group: bool = True) -> None:
        self.name, self.argv, self.ready_url, self.log_path, self.url = name, list(argv), ready_url, log_path, url
        self.env, self.cwd, self.stop_timeout_s = env, cwd, stop_timeout_s
        self.ready = ready or http_ok(ready_url)
        self.cause: CauseHook = cause or (lambda path, offset: log_tail(path, offset=offset))
        self.error, self.pid_path, self.poll_s = error, pid_path, poll_s
        self.term_group = term_group  # False: SIGTERM the leader only and let it stop its own children
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where this run's output starts in log_path
        self.last_exit: int | None = None  # return code of the run that ended last (None: none ended yet)

    def start(self, timeout: float | None = None) -> None:
        timeout = 60.0 if timeout is None else timeout
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        self.log_offset = start_log(self.log_path, self.argv)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise self.error(f"{self.name} could not be started: {exc}", details={"argv": self.argv}) from exc
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{self.process.pid}\n")
        try:
            self._wait_ready(self.process, timeout)
        except MlstackError:
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    raise self.error(f"{self.name} exited with code {code}: {self.failure_cause()}",
                                     details={"exit_code": code, "log": str(self.log_path)})
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if self.ready(client):
                        logger.info("%s ready at %s", self.name, self.url)
                        return
                if time.monotonic() > deadline:
                    raise self.error(f"{self.name} not ready after {timeout:.0f}s: {self.failure_cause()}",
                                     details={"timeout_s": timeout, "log": str(self.log_path)})
                time.sleep(self.poll_s)

    def failure_cause(self) -> str:
        """Why this run failed, read from its part of the log by the tier's cause hook."""
        return self.cause(self.log_path, self.log_offset)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after ``stop_timeout_s`` (and anything left in it: no orphans)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                (os.killpg if self.term_group else os.kill)(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, self.stop_timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.last_exit = proc.returncode
        if self.pid_path is not None:
            with contextlib.suppress(OSError, ValueError):
                if int(self.pid_path.read_text().strip()) == proc.pid:
                    self.pid_path.unlink()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def died(self) -> str | None:
        """``None`` while running (or never started); else why the current run ended: the exit reason, and the cause read
        from the log when the process exited by itself (a signal's victim logged nothing telling)."""
        proc = self.process
        if proc is None or (code := proc.poll()) is None:
            return None
        if code < 0:
            return f"{exit_reason(code)}; log {self.log_path}"
        return f"{exit_reason(code)}: {self.failure_cause()}"

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class Launcher:
    """Base of the tier launchers (Triton, BentoML, Prometheus): a subclass checks its preconditions and builds the
    ``ManagedProcess`` for one run in ``start``; running, stopping and dying are the same for every tier."""

    managed: ManagedProcess | None = None

    def start(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.managed.process if self.managed is not None else None

    @property
    def log_offset(self) -> int:
        return self.managed.log_offset if self.managed is not None else 0

    def is_running(self) -> bool:
        return self.managed is not None and self.managed.is_running()

    def died(self) -> str | None:
        return self.managed.died() if self.managed is not None else None

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
