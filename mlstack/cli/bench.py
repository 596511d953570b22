"""`mlstack bench SCENARIO`: Locust (scenario load) or wrk (throughput legs, CPU per request) against the stack and the baseline."""

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
    from loadtests.wrk_bench import WrkReport

console = Console(width=None if Console().is_terminal else 130)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 30s, 2m, 45)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def bench(
    scenario: Annotated[str, typer.Argument(
        help="triton | triton-grpc | gateway (alias gateway_rest) | bento | cache | ws | stored-inputs | jobs[-grid]")],
    users: Annotated[int, typer.Option("--users", "-u", min=1, help="Concurrent users (closed loop: users = concurrency).")] = 64,
    spawn_rate: Annotated[float, typer.Option("--spawn-rate", "-r", min=0.1, help="Users started per second.")] = 64.0,
    duration: Annotated[str, typer.Option("--duration", "-t", help="Run time per leg (30s, 2m).")] = "30s",
    model: Annotated[str, typer.Option("--model", help="Model under test (a 4-feature tabular model for REST/gRPC).")] = "iris-logreg",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Rows per request (1 = single-row; the gateway's predict mix stays 1).")] = 1,
    repository: Annotated[Path | None, typer.Option("--repository", help="Model repository (default: MLSTACK_REPOSITORY).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A running target to load (Triton URL, gRPC host:port, Bento URL).")] = None,
    max_failure_ratio: Annotated[float, typer.Option("--max-failure-ratio", min=0.0, max=1.0, help="Exit 1 above this.")] = 0.01,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder root (default: var/bench).")] = None,
    pin: Annotated[bool | None, typer.Option("--pin/--no-pin", help="Pin the load generator to the last CPU and the servers to the "
                                             "others (taskset). Default: on for Locust, off for wrk.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="locust (scenario load, the default) | wrk (throughput legs, C load "
                                        "generator, CPU per request of each server).")] = "locust",
    connections: Annotated[int | None, typer.Option("--connections", "-c", min=1, help="wrk: open connections (= concurrency, "
                                                   "default 64); ws: WebSocket connections (default 20).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="wrk: threads (default: one per CPU wrk runs on).")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="wrk: legs alternate this many times; the report gives medians.")] = 1,
    cache: Annotated[bool, typer.Option("--cache", help="wrk, gateway: prediction cache hit vs miss (same as `bench cache`).")] = False,
    fps: Annotated[float, typer.Option("--fps", min=0.1, help="ws: frames per second per connection.")] = 10.0,
    gateways: Annotated[int | None, typer.Option("--gateways", min=1, help="gateway, wrk: N gateway processes sharing Redis vs 1 "
                                                 "(with and without Redis): the cost of shared state; needs MLSTACK_REDIS_URL.")] = None,
) -> None:
    """Run a scenario's legs plus the baseline under the same load; print rps, p50/p99, failures, ratios (wrk: CPU ms/request)."""
    if scenario in ("jobs", "jobs-grid"):  # training jobs: upload → served, grid search on Ray vs sequential
        from mlstack.cli.bench_jobs import bench_jobs

        bench_jobs(console, grid_only=scenario == "jobs-grid")
        return
    if scenario == "ws":  # WebSocket streaming: --connections, --fps, --duration (digits-cnn unless --model)
        from mlstack.cli.bench_ws import bench_ws

        bench_ws(console, connections=connections or 20, fps=fps, duration_s=_seconds(duration),
                 model="digits-cnn" if model == "iris-logreg" else model, repository=repository, max_failure_ratio=max_failure_ratio)
        return
    if scenario == "stored-inputs":  # classify_image with the upload kept vs not: --users (8 unless given), --duration, --rounds
        _bench_stored_inputs(8 if users == 64 else users, _seconds(duration), rounds, repository, max_failure_ratio)
        return
    from loadtests import harness

    if engine not in ("locust", "wrk"):
        raise typer.BadParameter(f"unknown engine {engine!r}; choose locust or wrk", param_hint="--engine")
    if gateways is not None:  # only the wrk engine measures CPU per process: --gateways implies it
        if scenario not in ("gateway", "gateway_rest", "gateway-rest") or cache:
            raise typer.BadParameter("--gateways belongs to `mlstack bench gateway --engine wrk`", param_hint="--gateways")
        scenario, engine = "gateways", "wrk"
    if engine == "wrk" or scenario == "cache" or cache:
        _bench_wrk(scenario, cache, engine, connections or 64, threads, rounds, _seconds(duration), model, repository, url, out, bool(pin),
                   max_failure_ratio, gateways or 1)
        return
    if rounds != 1 or threads is not None:
        raise typer.BadParameter("--rounds and --threads belong to --engine wrk (Locust runs each leg once; use --users)")
    pin = True if pin is None else pin

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


def _bench_stored_inputs(users: int, duration_s: float, rounds: int, repository: Path | None, max_failure_ratio: float) -> None:
    """Two gateways before one task service, one keeping every upload (file backend): the on/off throughput ratio."""
    from loadtests.stored_inputs_bench import run

    repo = repository or get_settings().repository
    if not (repo / "digits-cnn").is_dir():
        raise typer.BadParameter(f"{repo} holds no digits-cnn (train it: mlstack train digits-cnn)", param_hint="--repository")
    console.print(f"stored inputs: classify_image, c={users}, {duration_s:g} s per leg, {rounds} round(s), off vs on")
    report = run(repo, concurrency=users, seconds=duration_s, rounds=rounds, say=lambda m: console.print(f"[dim]· {m}[/dim]"))
    console.print(f"throughput with stored inputs / without: {report.ratio:.2f} (median of {rounds} round(s)); "
                  f"objects stored: {report.stored}; failure ratio {report.failure_ratio:.2%}")
    if report.failure_ratio > max_failure_ratio:
        console.print(f"[red]failure ratio {report.failure_ratio:.2%} above --max-failure-ratio {max_failure_ratio:.2%}[/red]")
        raise typer.Exit(1)


def _bench_wrk(scenario: str, cache: bool, engine: str, connections: int, threads: int | None, rounds: int, duration_s: float,
               model: str, repository: Path | None, url: str | None, out: Path | None, pin: bool, max_failure_ratio: float,
               gateways: int = 1) -> None:
    from loadtests import wrk, wrk_bench

    name = {"triton_rest": "triton", "triton-rest": "triton", "gateway_rest": "gateway", "gateway-rest": "gateway"}.get(scenario, scenario)
    if cache or name == "cache":
        if name not in ("gateway", "cache"):
            raise typer.BadParameter("the cache bench is `mlstack bench cache` or `mlstack bench gateway --engine wrk --cache`")
        name = "cache"
    if name not in (*wrk_bench.LEGS, "gateways"):
        raise typer.BadParameter(f"the wrk engine runs triton, gateway and cache, not {scenario!r}", param_hint="SCENARIO")
    if url is not None:
        raise typer.BadParameter("the wrk engine starts its own servers (it measures their CPU); drop --url", param_hint="--url")
    opts = wrk_bench.WrkOptions(scenario=name, connections=connections, duration_s=duration_s, rounds=rounds, threads=threads,
                                model=model, repository=repository, out_root=out, pin=pin, gateways=gateways)
    try:
        report = wrk_bench.run(opts, get_settings(), progress=lambda m: console.print(f"[dim]· {m}[/dim]"))
    except wrk.WrkMissing as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    if name == "gateways":
        from mlstack.cli.bench_gateways import print_gateways

        print_gateways(console, report)
    else:
        _print_wrk(report)
    worst = max((leg.error_ratio for leg in report.legs().values()), default=1.0)
    if worst > max_failure_ratio:
        console.print(f"[red]error ratio {worst:.2%} above --max-failure-ratio {max_failure_ratio:.2%}[/red]")
        raise typer.Exit(1)


def _print_wrk(report: WrkReport) -> None:
    legs = report.legs()
    rounds = max((leg.rounds for leg in legs.values()), default=0)
    title = (f"mlstack bench {report.scenario} --engine wrk: c={report.connections}, {report.threads} wrk thread(s), "
             f"{report.duration_s:g}s legs, median of {rounds} round(s), {report.cpu_count} CPUs")
    table = Table(title=title)
    trees = ("triton", "gateway", "ingester", "baseline")
    for col in ("leg", "requests", "rps", "p50 ms", "p99 ms", "errors", *(f"{t} CPU ms/req" for t in trees), "wrk CPU ms/req",
                *(("cache hits",) if report.scenario == "cache" else ())):
        table.add_column(col, justify="right" if col != "leg" else "left")
    for name, leg in legs.items():
        cpu = [f"{leg.cpu_ms[t]:.3f}" if t in leg.cpu_ms else "—" for t in trees]
        extra = (f"{leg.cache_hits:,.0f}" if leg.cache_hits is not None else "—",) if report.scenario == "cache" else ()
        table.add_row(name, f"{leg.requests:,}", f"{leg.rps:,.0f}", f"{leg.p50_ms:.2f}", f"{leg.p99_ms:.2f}", f"{leg.errors:,}", *cpu,
                      f"{leg.wrk_cpu_ms:.3f}", *extra)
    console.print(table)
    loads = [r.load[0] for r in report.runs]
    if loads:
        console.print(f"load average (1 min) at the end of the legs: {min(loads):.2f}–{max(loads):.2f} on {report.cpu_count} CPUs")
    for a_leg, ref, what in (("gateway", "direct", "gateway vs direct Triton"), ("gateway", "baseline", "gateway vs the baseline"),
                           ("direct", "baseline", "direct Triton vs the baseline"), ("triton", "baseline", "Triton vs the baseline"),
                           ("hit", "miss", "cache hit vs miss")):
        if (r := report.ratio(a_leg, ref)) is not None:
            line = f"{what}: rps × {r[0]:.2f}, p50 × {r[1]:.2f}, p99 × {r[2]:.2f}"
            a, b = legs[a_leg].cpu_ms.get("gateway"), legs[ref].cpu_ms.get("gateway")
            if report.scenario == "cache" and a and b:
                line += f", gateway CPU/request × {a / b:.2f}"
            console.print(line)
    if report.history is not None:
        console.print(f"history rows (status 200): {report.history['rows']:,} for {report.history['successful_requests']:,} "
                      "successful gateway requests")
    if report.scenario == "gateway":
        for line in front_door_targets(report):
            console.print(line)
    for note in report.notes:
        console.print(f"[yellow]warning:[/yellow] {note}")
    console.print(f"reports: {report.out_dir}")


def front_door_targets(report: WrkReport) -> list[str]:
    """The front door's targets against this run's figures, one line each ('met' / 'not met'); the CPU-budget reading of
    what is not met is in docs/benchmarks.md."""
    legs = report.legs()
    gw, direct, base = legs.get("gateway"), legs.get("direct"), legs.get("baseline")
    if gw is None:
        return []
    checks: list[tuple[str, float | None, float, bool]] = [  # (what, measured, target, lower is better)
        ("gateway CPU ms/request", gw.cpu_ms.get("gateway"), 0.20, True),
        ("ingester CPU ms/row", gw.cpu_ms.get("ingester"), 0.10, True)]
    if direct is not None and direct.rps:
        checks.append(("throughput ÷ direct Triton", gw.rps / direct.rps, 0.6, False))
        if direct.p99_ms:
            checks.append(("p99 ÷ direct Triton", gw.p99_ms / direct.p99_ms, 2.0, True))
    if base is not None and base.rps:
        checks.append(("throughput ÷ plain FastAPI", gw.rps / base.rps, 2.5, False))
    if report.connections == 1:
        checks.append(("p50 ms at c=1", gw.p50_ms, 1.5, True))
    lines = []
    for what, got, target, lower in checks:
        if got is None:
            continue
        met = got <= target if lower else got >= target
        lines.append(f"target {what} {'≤' if lower else '≥'} {target:g}: {got:.3g} — {'met' if met else 'not met'}")
    return lines


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
