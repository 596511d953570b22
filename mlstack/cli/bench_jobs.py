"""`mlstack bench jobs`: print the training-jobs benchmark (loadtests.jobs_bench) as two tables."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.table import Table

from mlstack.settings import get_settings


def bench_jobs(console: Console, *, grid_only: bool = False) -> None:
    from loadtests import jobs_bench

    try:
        r = jobs_bench.run(get_settings(), progress=lambda m: console.print(f"[dim]· {m}[/dim]"), grid_only=grid_only)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    if r.served:
        t = Table(title="upload → served version (gateway + local Ray + Triton poll 1 s)")
        for col in ("job", "upload s", "job s", "job end → served s", "total s", "held-out"):
            t.add_column(col, justify="right")
        for s in r.served:
            t.add_row(s.label, "-" if s.upload_s is None else f"{s.upload_s:.2f}", f"{s.job_s:.2f}", f"{s.served_s:.2f}",
                      f"{s.total_s:.2f}", s.metric)
        console.print(t)
    g = Table(title=f"grid search, {r.trials} trials (RBF SVC on digits, 3-fold CV each)")
    for col in ("sequential s", "Ray 2 CPUs s", "speed-up", "ray.init s", "same best", "load avg (1 min)"):
        g.add_column(col, justify="right")
    g.add_row(f"{r.sequential_s:.2f}", f"{r.ray_s:.2f}", f"{r.speedup:.2f}x", f"{r.ray_start_s:.1f}", str(r.same_best),
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    console.print(g)
