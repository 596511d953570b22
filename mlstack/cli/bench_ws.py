"""`mlstack bench ws`: print the WebSocket streaming benchmark (loadtests.ws_bench) as a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mlstack.settings import get_settings


def bench_ws(console: Console, *, connections: int, fps: float, duration_s: float, model: str, repository: Path | None,
             max_failure_ratio: float) -> None:
    from loadtests import ws_bench

    settings = get_settings()
    try:
        r = ws_bench.run(settings, connections=connections, fps=fps, duration_s=duration_s, model=model,
                         repository=repository or settings.repository, progress=lambda m: console.print(f"[dim]· {m}[/dim]"))
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    t = Table(title=f"ws: {connections} connections x {fps:g} frames/s, {duration_s:g}s, {model}")
    for col in ("offered/s", "answered/s", "p50 ms", "p99 ms", "dropped", "errors", "wrong labels", "gateway CPU", "triton CPU"):
        t.add_column(col, justify="right")
    t.add_row(f"{connections * fps:g}", f"{r.answered_per_s:.1f}", f"{r.pct(50):.1f}", f"{r.pct(99):.1f}", str(r.dropped),
              str(r.errors), str(r.wrong), f"{r.cpu_pct.get('gateway', 0):.0f}%", f"{r.cpu_pct.get('triton', 0):.0f}%")
    console.print(t)
    console.print(f"latency inside the gateway (frame read -> answer sent) p50 {r.pct(50, server=True):.1f} / "
                  f"p99 {r.pct(99, server=True):.1f} ms; client send lag behind schedule p50 {r.pct(50, lag=True):.1f} / "
                  f"p99 {r.pct(99, lag=True):.1f} ms; client CPU {r.cpu_pct.get('client', 0):.0f}%")
    console.print(f"sent {r.sent}, answered {r.answered}; BentoML is not on this path (0% CPU); "
                  f"load average {' '.join(f'{x:.2f}' for x in r.load_average)}")
    if r.sent and r.errors / r.sent > max_failure_ratio:
        console.print(f"[red]error ratio {r.errors / r.sent:.2%} above --max-failure-ratio[/red]")
        raise typer.Exit(1)
