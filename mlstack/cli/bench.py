"""`mlstack bench SCENARIO`: Locust headless against the stack and, in the same run, the one-process baseline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlstack.settings import get_settings

if TYPE_CHECKING:
    from loadtests.harness import BenchReport

console = Console(width=None if Console().is_terminal else 130)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 30s, 2m, 45)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def bench(
    scenario: Annotated[str, typer.Argument(help="triton | triton-grpc | gateway (alias gateway_rest) | bento")],
    users: Annotated[int, typer.Option("--users", "-u", min=1, help="Concurrent users (closed loop: users = concurrency).")] = 64,
    spawn_rate: Annotated[float, typer.Option("--spawn-rate", "-r", min=0.1, help="Users started per second.")] = 64.0,
    duration: Annotated[str, typer.Option("--duration", "-t", help="Run time per leg (30s, 2m).")] = "30s",
    model: Annotated[str, typer.Option("--model", help="Model under test (a 4-feature tabular model for REST/gRPC).")] = "iris-logreg",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Rows per request (1 = single-row; the gateway's predict mix stays 1).")] = 1,
    repository: Annotated[Path | None, typer.Option("--repository", help="Model repository (default: MLSTACK_REPOSITORY).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A running target to load (Triton URL, gRPC host:port, Bento URL).")] = None,
    max_failure_ratio: Annotated[float, typer.Option("--max-failure-ratio", min=0.0, max=1.0, help="Exit 1 above this.")] = 0.01,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder root (default: var/bench).")] = None,
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="Pin Locust to the last CPU and the servers to the others (taskset).")] = True,
) -> None:
    """Run a Locust scenario headless plus the baseline under the same load; print rps, p50/p95/p99, failures and ratios."""
    from loadtests import harness

    try:
        scenario_name = harness.canonical(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from exc
    opts = harness.BenchOptions(scenario=scenario_name, users=users, spawn_rate=spawn_rate, duration_s=_seconds(duration),
                                model=model, batch=batch, repository=repository, url=url, out_root=out, pin=pin)
    try:
        report = harness.run(opts, get_settings(), progress=lambda m: console.print(f"[dim]· {m}[/dim]"))
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    _print(report)
    worst = max((r.failure_ratio for r in report.legs.values()), default=1.0)
    if worst > max_failure_ratio:
        console.print(f"[red]failure ratio {worst:.2%} above --max-failure-ratio {max_failure_ratio:.2%}[/red]")
        raise typer.Exit(1)


def _print(report: BenchReport) -> None:
    table = Table(title=f"mlstack bench {report.scenario}")
    for col in ("leg", "requests", "rps", "p50 ms", "p95 ms", "p99 ms", "failed", "locust CPU", "rps ×base", "p99 ×base"):
        table.add_column(col, justify="right" if col != "leg" else "left")
    for name, r in report.legs.items():
        ratio = report.ratio(name) if name != "baseline" else None
        table.add_row(name, str(r.requests), f"{r.rps:,.0f}", f"{r.p50_ms:g}", f"{r.p95_ms:g}", f"{r.p99_ms:g}", f"{r.failure_ratio:.2%}",
                      f"{r.locust_cpu:.0%}", f"{ratio[0]:.2f}" if ratio else "—", f"{ratio[1]:.2f}" if ratio else "—")
    console.print(table)
    if report.batch_size is not None:
        console.print(f"Triton mean batch size (Δnv_inference_count / Δnv_inference_exec_count): {report.batch_size:.2f}")
    if report.scenario == "gateway" and (g := report.ratio("gateway", "direct")):
        console.print(f"gateway vs direct Triton: {g[0]:.0%} of the throughput (target ≥ 60%), p99 × {g[1]:.2f} (target ≤ 2)")
    if report.scenario == "triton" and (t := report.ratio("triton")):
        console.print(f"Triton vs baseline: {t[0]:.2f}× the throughput (target ≥ 4), p99 × {t[1]:.2f} (target < 1)")
    if report.history is not None:
        h = report.history
        console.print(f"history rows (status 200): {h['rows']:,} for {h['successful_requests']:,} successful gateway requests "
                      "(more rows = requests in flight when Locust stopped)")
    for note in report.notes:
        console.print(f"[yellow]warning:[/yellow] {note}")
    console.print(f"reports: {report.out_dir}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
