"""The table and summary of `mlstack bench gateway --engine wrk --gateways N` (loadtests/gateways_bench.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from loadtests.wrk_bench import WrkReport


def print_gateways(console: Console, report: WrkReport) -> None:
    from loadtests.gateways_bench import headline

    legs = report.legs()
    rounds = max((leg.rounds for leg in legs.values()), default=0)
    table = Table(title=f"mlstack bench gateway --engine wrk --gateways: c={report.connections}, {report.duration_s:g}s legs, "
                        f"median of {rounds} round(s), {report.cpu_count} CPUs")
    for col in ("leg", "gateways", "requests", "rps", "p50 ms", "p99 ms", "errors", "gateway CPU ms/req", "triton CPU ms/req",
                "redis CPU ms/req", "Redis trips/req", "µs/trip in Redis", "wrk CPU ms/req"):
        table.add_column(col, justify="right" if col != "leg" else "left")
    for name, leg in legs.items():
        redis_cpu = leg.cpu_ms.get("redis")
        table.add_row(name, f"{leg.extra.get('gateways', 0):.0f}", f"{leg.requests:,}", f"{leg.rps:,.0f}", f"{leg.p50_ms:.2f}",
                      f"{leg.p99_ms:.2f}", f"{leg.errors:,}", f"{leg.cpu_ms['gateway']:.3f}", f"{leg.cpu_ms['triton']:.3f}",
                      "—" if redis_cpu is None else f"{redis_cpu:.3f}", f"{leg.extra.get('redis_round_trips_per_request', 0):.2f}",
                      f"{leg.extra.get('redis_usec_per_round_trip', 0):.1f}", f"{leg.wrk_cpu_ms:.3f}")
    console.print(table)
    loads = [r.load[0] for r in report.runs]
    if loads:
        console.print(f"load average (1 min) at the end of the legs: {min(loads):.2f}–{max(loads):.2f} on {report.cpu_count} CPUs")
    if report.redis_rtt:
        rtt = report.redis_rtt
        console.print(f"token-bucket script round trip from an idle client: p50 {rtt['p50_us']:.0f} µs, p99 {rtt['p99_us']:.0f} µs "
                      f"({rtt['samples']:.0f} calls)")
    if (line := headline(report)) is not None:
        console.print(line)
    if report.history is not None:
        console.print(f"history rows (status 200): {report.history['rows']:,} for {report.history['successful_requests']:,} "
                      "successful gateway requests")
    for note in report.notes:
        console.print(f"[yellow]warning:[/yellow] {note}")
    console.print(f"reports: {report.out_dir}")
