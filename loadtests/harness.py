"""`mlstack bench`: start what a scenario needs, run its Locust legs and the baseline under the same load, report ratios."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loadtests import servers
from loadtests.locust_run import LegResult, run_leg
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

SCENARIOS = ("triton", "triton-grpc", "gateway", "bento")
ALIASES = {"gateway_rest": "gateway", "gateway-rest": "gateway", "triton_grpc": "triton-grpc", "triton_rest": "triton",
           "bento_tasks": "bento"}


@dataclass
class BenchOptions:
    scenario: str
    users: int
    spawn_rate: float
    duration_s: float
    model: str = "iris-logreg"
    batch: int = 1
    repository: Path | None = None
    url: str | None = None  # a running stack's URL for the scenario's main target (nothing is started for it)
    out_root: Path | None = None
    pin: bool = True


@dataclass
class BenchReport:
    scenario: str
    out_dir: Path
    legs: dict[str, LegResult] = field(default_factory=dict)
    batch_size: float | None = None
    notes: list[str] = field(default_factory=list)
    users: int = 0
    model: str = ""
    batch: int = 1
    history: dict[str, int] | None = None

    def ratio(self, leg: str, ref: str = "baseline") -> tuple[float, float] | None:
        """(rps ratio, p99 ratio) of ``leg`` over ``ref``."""
        a, b = self.legs.get(leg), self.legs.get(ref)
        if a is None or b is None or not b.rps or not b.p99_ms:
            return None
        return a.rps / b.rps, a.p99_ms / b.p99_ms

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "users": self.users, "model": self.model, "batch": self.batch,
                "legs": {k: v.as_dict() for k, v in self.legs.items()}, "batch_size": self.batch_size, "history": self.history,
                "notes": self.notes}


def canonical(scenario: str) -> str:
    name = ALIASES.get(scenario, scenario)
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    return name


def run(opts: BenchOptions, settings: Settings, progress: Callable[[str], None] = lambda _m: None) -> BenchReport:
    """Run one bench scenario end to end; every server it started is stopped before it returns."""
    scenario = canonical(opts.scenario)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(opts.out_root or Path(settings.var_dir) / "bench") / f"{stamp}-{scenario}"
    out_dir.mkdir(parents=True, exist_ok=True)
    repository = Path(opts.repository or settings.repository).resolve()
    report = BenchReport(scenario, out_dir, users=opts.users, model=opts.model, batch=opts.batch)
    s = servers.bench_settings(settings, repository, out_dir / "var")
    env = {"MLSTACK_BENCH_MODEL": opts.model, "MLSTACK_BENCH_BATCH": str(opts.batch)}

    def leg(name: str, locustfile: str, user: str, host: str, extra_env: dict[str, str] | None = None) -> None:
        progress(f"{name}: {opts.users} users for {opts.duration_s:g}s against {host}")
        report.legs[name] = run_leg(name, locustfile, user, host, out_dir, users=opts.users, spawn_rate=opts.spawn_rate,
                                    duration_s=opts.duration_s, env={**env, **(extra_env or {})}, pin=opts.pin)

    with contextlib.ExitStack() as stack:
        needs_triton = opts.url is None or scenario == "gateway"
        triton_url = opts.url if (opts.url and scenario in ("triton", "triton-grpc")) else None
        if needs_triton and triton_url is None:
            progress(f"starting Triton over {repository}")
            triton_url = stack.enter_context(servers.triton(s, opts.pin))
        metrics_url = s.triton_metrics_url if opts.url is None else None
        before = servers.triton_counts(metrics_url, opts.model) if metrics_url else None

        def batch_size() -> None:
            if metrics_url and before is not None:
                count, execs = servers.triton_counts(metrics_url, opts.model)
                if execs > before[1]:
                    report.batch_size = (count - before[0]) / (execs - before[1])

        if scenario == "triton":
            leg("triton", "triton_rest.py", "TritonRestUser", str(triton_url))
        elif scenario == "triton-grpc":
            host = opts.url or s.triton_grpc_url
            leg("triton-grpc", "triton_grpc.py", "TritonGrpcUser", host)
        elif scenario == "gateway":
            leg("direct", "triton_rest.py", "TritonRestUser", str(triton_url))
            if opts.url:
                raise ValueError("`--url` for the gateway scenario is not supported: it needs its own bench user")
            progress("starting the gateway")
            gw_url, user, password = stack.enter_context(servers.gateway(s, out_dir / "gateway-server.log", opts.pin))
            # The like-for-like leg reuses one access token, so 64 argon2 logins don't eat into its measured window.
            leg("gateway", "gateway_rest.py", "GatewayV2User", gw_url,
                {"MLSTACK_BENCH_TOKEN": servers.login(gw_url, user, password)})
            leg("gateway-mixed", "gateway_rest.py", "GatewayUser", gw_url,
                {"MLSTACK_BENCH_USERNAME": user, "MLSTACK_BENCH_PASSWORD": password})
        elif scenario == "bento":
            if opts.url is None:
                progress("starting the BentoML task service")
            bento_url = opts.url or stack.enter_context(servers.bento(s, opts.pin))
            leg("bento", "bento_tasks.py", "BentoImageUser", bento_url)

        batch_size()
        if scenario == "gateway":
            stack.close()  # stops the gateway, which drains its history queue, and Triton
            _check_history(report, s)
    # Triton is stopped now: the baseline gets the same cores to itself.
    progress("starting the baseline (FastAPI + onnxruntime, one process)")
    with servers.baseline(servers.latest_version_dir(repository, opts.model), out_dir / "baseline-server.log", opts.pin) as base:
        leg("baseline", "baseline_rest.py", "BaselineUser", base)
    for r in report.legs.values():
        if r.generator_bound:
            report.notes.append(f"{r.name}: the load generator used {r.locust_cpu:.0%} of its core; the figure is a lower "
                                "bound set by Locust, not by the server")
    (out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _check_history(report: BenchReport, settings: Settings) -> None:
    """History rows written by the gateway vs the successful requests Locust counted through it (after the drain)."""
    ok = sum(r.requests - r.failures for name, r in report.legs.items() if name.startswith("gateway"))
    report.history = check_history_rows(settings, ok, report.notes)


def check_history_rows(settings: Settings, ok: int, notes: list[str]) -> dict[str, int] | None:
    """{"rows", "successful_requests"} of the bench gateway's SQLite history; a note when rows were lost."""
    db = Path(settings.var_dir) / "gateway.db"
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = int(conn.execute("SELECT COUNT(*) FROM predictions WHERE status = 200").fetchone()[0])
    except sqlite3.Error as exc:
        notes.append(f"could not count history rows in {db}: {exc}")
        return None
    if rows < ok:
        notes.append(f"history lost records: {rows} rows for {ok} successful gateway requests")
    return {"rows": rows, "successful_requests": ok}
