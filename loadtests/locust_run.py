"""Run one Locust leg headless in a subprocess (pinned away from the servers), measure its CPU, read its CSV stats."""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LOADTESTS = Path(__file__).resolve().parent
CPU_BOUND_SHARE = 0.9  # locust above 90% of its one core: the generator, not the server, set the pace


@dataclass
class LegResult:
    """The aggregate of one Locust run."""

    name: str
    host: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    locust_cpu: float  # share of one core the load generator used (0..1 per process)
    duration_s: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 1.0

    @property
    def generator_bound(self) -> bool:
        return self.locust_cpu >= CPU_BOUND_SHARE

    def as_dict(self) -> dict:
        return {**asdict(self), "failure_ratio": self.failure_ratio, "generator_bound": self.generator_bound}


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def generator_cpus() -> list[int]:
    """The last CPU for Locust when there are at least two; the servers get the others (see ``server_cpus``)."""
    c = cpus()
    return c[-1:] if len(c) >= 2 else c


def server_cpus() -> list[int]:
    c = cpus()
    return c[:-1] if len(c) >= 2 else c


def pin_prefix(cpu_list: list[int]) -> list[str]:
    """``taskset -c ...`` when taskset exists and there is more than one CPU, else nothing (no pinning possible)."""
    taskset = shutil.which("taskset")
    if taskset is None or len(cpus()) < 2:
        return []
    return [taskset, "-c", ",".join(map(str, cpu_list))]


def pin_process_group(pgid: int, cpu_list: list[int]) -> None:
    """Move every thread of every process in group ``pgid`` (a server and its stubs) onto ``cpu_list``."""
    if len(cpus()) < 2:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for tid in (entry / "task").iterdir():
                os.sched_setaffinity(int(tid.name), set(cpu_list))
        except (OSError, ValueError):
            continue


def run_leg(name: str, locustfile: str, user_class: str, host: str, out_dir: Path, *, users: int, spawn_rate: float,
            duration_s: float, env: dict[str, str] | None = None, pin: bool = True) -> LegResult:
    """Run ``locustfile:user_class`` against ``host``; CSV + HTML + log land in ``out_dir`` prefixed ``name``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / name
    argv = [*(pin_prefix(generator_cpus()) if pin else []), sys.executable, "-m", "locust", "-f", str(LOADTESTS / locustfile),
            user_class, "--headless", "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{duration_s:g}s",
            "--host", host, "--csv", str(prefix), "--html", f"{prefix}.html",
            "--json-file", str(prefix), "--only-summary", "--stop-timeout", "5",
            "--exit-code-on-error", "0", "--loglevel", "WARNING"]
    child_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        p for p in (str(LOADTESTS.parent), os.environ.get("PYTHONPATH")) if p)}
    logger.info("locust leg %s: %s", name, " ".join(argv))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(f"{prefix}.log", "wb") as log:
        proc = subprocess.run(argv, env=child_env, stdout=log, stderr=subprocess.STDOUT, check=False,
                              timeout=duration_s + 120)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = Path(f"{prefix}.json")
    if proc.returncode != 0 or not stats.exists():
        tail = Path(f"{prefix}.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"locust leg {name} failed (exit {proc.returncode}); log {prefix}.log:\n{tail}")
    return _parse(name, host, stats, cpu / max(wall, 1e-6), duration_s)


def _parse(name: str, host: str, stats: Path, cpu_share: float, duration_s: float) -> LegResult:
    """Aggregate Locust's final JSON stats (the CSV can miss the last second); logins (once per user) are left out."""
    entries = [e for e in json.loads(stats.read_text()) if e["name"] != "login"]
    hist: Counter[int] = Counter()
    for e in entries:
        hist.update({int(float(ms)): n for ms, n in e["response_times"].items()})
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    start = min((e["start_time"] for e in entries), default=0.0)
    end = max((e["last_request_timestamp"] or start for e in entries), default=start)
    return LegResult(name=name, host=host, requests=requests, failures=failures,
                     rps=requests / (end - start) if end > start else 0.0, p50_ms=_percentile(hist, 0.50),
                     p95_ms=_percentile(hist, 0.95), p99_ms=_percentile(hist, 0.99), locust_cpu=cpu_share, duration_s=duration_s)


def _percentile(hist: Counter[int], q: float) -> float:
    """The smallest recorded response time (Locust's rounded ms buckets) with at least ``q`` of requests at or below it."""
    total = sum(hist.values())
    if not total:
        return 0.0
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= q * total:
            return float(ms)
    return float(max(hist))
