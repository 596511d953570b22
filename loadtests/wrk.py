"""Run one `wrk` leg (Debian's C load generator) with the v2 infer Lua script; parse its JSON summary and its own CPU."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent / "wrk_v2_infer.lua"  # package data (pyproject: "*.lua")
INSTALL_HINT = "`wrk` is not installed: run `apt-get install wrk` (Debian/Ubuntu) or `make system-deps`"
_JSON_PREFIX = "MLSTACK_WRK_JSON "
_SAMPLE_PREFIX = "MLSTACK_WRK_SAMPLE "


class WrkMissing(RuntimeError):
    """`wrk` is not on PATH."""


@dataclass
class WrkRun:
    """What one wrk process measured (latencies in ms; errors = socket errors + bad responses)."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    socket_errors: dict[str, int]
    bad_responses: int  # not 2xx, or 2xx without outputs
    bad_sample: str
    wrk_cpu_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def executable() -> str:
    """The path of `wrk`, or WrkMissing with the install hint."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(INSTALL_HINT)
    return path


def run(url: str, *, connections: int, duration_s: float, threads: int, mode: str = "random", width: int = 4,
        input_name: str = "input", token: str | None = None, log: Path | None = None, cpu_prefix: list[str] | None = None,
        timeout_s: float = 10.0, addrs: str | None = None) -> WrkRun:
    """POST v2 infer bodies to ``url`` (the full infer URL) for ``duration_s`` with ``connections`` open connections.

    ``addrs`` ("host:port,host:port"): thread i connects to address i mod len (same path and Host header), so several
    servers share one wrk and one latency histogram."""
    threads = max(1, min(threads, connections))  # wrk refuses more threads than connections
    argv = [*(cpu_prefix or []), executable(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration_s))}s",
            "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(SCRIPT), url, "--", mode, str(width), input_name]
    env = {**os.environ, "MLSTACK_BENCH_TOKEN": token or "", "MLSTACK_BENCH_ADDRS": addrs or ""}
    logger.info("wrk: %s", " ".join(argv))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()  # wrk prints at the end; -d and --timeout bound its run time
    _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait(): its rusage is the generator's own CPU
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    if log is not None:
        log.write_text(text)
    return parse(text, proc.returncode, usage.ru_utime + usage.ru_stime)


def parse(text: str, returncode: int, cpu_s: float) -> WrkRun:
    """The run described by wrk's output (the Lua ``done()`` line)."""
    line = next((ln for ln in text.splitlines() if ln.startswith(_JSON_PREFIX)), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {returncode}): {text[-800:]}")
    d = json.loads(line[len(_JSON_PREFIX):])
    sample = next((ln[len(_SAMPLE_PREFIX):] for ln in text.splitlines() if ln.startswith(_SAMPLE_PREFIX)), "")
    sockets = {k: int(d[k]) for k in ("connect", "read", "write", "timeout")}
    duration = d["duration_us"] / 1e6
    return WrkRun(requests=d["requests"], duration_s=duration, rps=d["requests"] / duration if duration else 0.0,
                  p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000, max_ms=d["max_us"] / 1000,
                  errors=sum(sockets.values()) + d["bad"], socket_errors=sockets, bad_responses=d["bad"], bad_sample=sample,
                  wrk_cpu_s=cpu_s)
