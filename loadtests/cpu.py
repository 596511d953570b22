"""CPU seconds (user + system) of a server's whole process tree, so a leg can report CPU ms per request per server."""

from __future__ import annotations

import contextlib
import os

import psutil


def tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and every live descendant, plus what their reaped children used (Triton's backend stubs)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def snapshot(trees: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named tree now."""
    return {name: tree_cpu_s(pid) for name, pid in trees.items()}


def ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU ms each tree spent per request between two snapshots."""
    return {name: (after[name] - before[name]) * 1000 / requests if requests else 0.0 for name in before}


def load_average() -> tuple[float, float, float]:
    """The 1/5/15-minute load average (the box may be shared: every figure is reported next to it)."""
    return os.getloadavg()
