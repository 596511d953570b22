"""`mlstack bench --engine wrk`: throughput legs driven by `wrk`, CPU per request of each server tree, medians over rounds.

Scenarios: ``triton`` (Triton direct vs the baseline), ``gateway`` (direct, through the gateway, baseline), ``cache``
(through the gateway with the prediction cache on: every request a hit vs none) and ``gateways`` (N gateways sharing
Redis vs one, with and without Redis: loadtests/gateways_bench.py). Every server is started once on free
ports and stays up, so the legs can alternate (d, g, b, d, g, b, ...) and share whatever noise the box has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loadtests import cpu, servers, wrk
from loadtests.harness import check_history_rows
from loadtests.locust_run import cpus, generator_cpus, pin_prefix
from mlstack.repository.config import read_config
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

LEGS = {"triton": ("triton", "baseline"), "gateway": ("direct", "gateway", "baseline"), "cache": ("hit", "miss")}
SERVES = {"triton": ("triton",), "direct": ("triton",), "gateway": ("gateway", "triton", "ingester"),
          "baseline": ("baseline",), "hit": ("gateway", "triton", "ingester"),
          "miss": ("gateway", "triton", "ingester")}  # the trees whose CPU a leg charges
SETTLE_S = 0.3  # after wrk stops: in-flight requests and the gateway's 0.2 s history flush finish inside the window
INGESTER_SETTLE_MAX_S = 20.0


@dataclass
class WrkOptions:
    scenario: str
    connections: int
    duration_s: float
    rounds: int = 1
    threads: int | None = None  # default: one per CPU wrk may run on
    model: str = "iris-logreg"
    repository: Path | None = None
    out_root: Path | None = None
    pin: bool = False
    gateways: int = 1  # scenario gateways: how many gateways share Redis in the last leg
    ingester: str = "external"  # history ingester: its own process (as `mlstack up`), or "embedded" in the gateway


@dataclass
class LegRun:
    """One wrk run of one leg in one round."""

    name: str
    round: int
    run: wrk.WrkRun
    cpu_ms: dict[str, float]  # server tree -> CPU ms per request
    load: tuple[float, float, float]  # load average when the leg ended
    cache_hits: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # scenario figures (gateways: Redis calls and µs per request)

    def as_dict(self) -> dict:
        return {"name": self.name, "round": self.round, **self.run.as_dict(), "cpu_ms_per_request": self.cpu_ms,
                "wrk_cpu_ms_per_request": self.wrk_cpu_ms, "load_average": list(self.load), "cache_hits": self.cache_hits,
                **({"extra": self.extra} if self.extra else {})}

    @property
    def wrk_cpu_ms(self) -> float:
        return self.run.wrk_cpu_s * 1000 / self.run.requests if self.run.requests else 0.0


@dataclass
class LegSummary:
    """A leg's medians over its rounds (requests, errors and hits are totals)."""

    name: str
    rounds: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: dict[str, float]
    wrk_cpu_ms: float
    cache_hits: float | None
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, runs: list[LegRun]) -> LegSummary:
        med = statistics.median
        hits = [r.cache_hits for r in runs if r.cache_hits is not None]
        return cls(name=runs[0].name, rounds=len(runs), requests=sum(r.run.requests for r in runs),
                   errors=sum(r.run.errors for r in runs), rps=med(r.run.rps for r in runs), p50_ms=med(r.run.p50_ms for r in runs),
                   p99_ms=med(r.run.p99_ms for r in runs), cpu_ms={k: med(r.cpu_ms[k] for r in runs) for k in runs[0].cpu_ms},
                   wrk_cpu_ms=med(r.wrk_cpu_ms for r in runs), cache_hits=sum(hits) if hits else None,
                   extra={k: med(r.extra.get(k, 0.0) for r in runs) for k in dict.fromkeys(k for r in runs for k in r.extra)})

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass
class WrkReport:
    scenario: str
    out_dir: Path
    connections: int
    threads: int
    duration_s: float
    model: str
    cpu_count: int
    runs: list[LegRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    history: dict[str, int] | None = None
    redis_rtt: dict[str, float] | None = None  # gateways: the token-bucket script's round trip from an idle client

    def legs(self) -> dict[str, LegSummary]:
        names = dict.fromkeys(r.name for r in self.runs)
        return {n: LegSummary.of([r for r in self.runs if r.name == n]) for n in names}

    def ratio(self, leg: str, ref: str) -> tuple[float, float, float] | None:
        """(rps, p50, p99) of ``leg`` over ``ref``, from the medians."""
        legs = self.legs()
        a, b = legs.get(leg), legs.get(ref)
        if a is None or b is None or not (b.rps and b.p50_ms and b.p99_ms):
            return None
        return a.rps / b.rps, a.p50_ms / b.p50_ms, a.p99_ms / b.p99_ms

    def to_json(self) -> dict:
        return {"engine": "wrk", "scenario": self.scenario, "connections": self.connections, "threads": self.threads,
                "duration_s": self.duration_s, "model": self.model, "cpu_count": self.cpu_count,
                "legs": {k: {**asdict(v), "error_ratio": v.error_ratio} for k, v in self.legs().items()},
                "runs": [r.as_dict() for r in self.runs], "history": self.history, "notes": self.notes,
                **({"redis_rtt": self.redis_rtt} if self.redis_rtt is not None else {})}


def run(opts: WrkOptions, settings: Settings, progress: Callable[[str], None] = lambda _m: None) -> WrkReport:
    """Start the scenario's servers, run its legs alternately for ``opts.rounds`` rounds, stop everything, report."""
    if opts.scenario not in (*LEGS, "gateways"):
        raise ValueError(f"the wrk engine runs {', '.join(LEGS)} and gateways; not {opts.scenario!r}")
    wrk.executable()  # fail before starting anything
    if opts.scenario == "gateways":
        from loadtests import gateways_bench

        if opts.connections < opts.gateways:
            raise ValueError(f"--connections {opts.connections} cannot reach {opts.gateways} gateways (one wrk thread each)")
        gateways_bench.require_redis(opts.gateways, settings.redis_url)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(opts.out_root or Path(settings.var_dir) / "bench") / f"{stamp}-{opts.scenario}-wrk"
    out_dir.mkdir(parents=True, exist_ok=True)
    repository = Path(opts.repository or settings.repository).resolve()
    model_dir = servers.latest_version_dir(repository, opts.model)
    input_name, width = _input_of(repository / opts.model / "config.pbtxt")
    wrk_cpus = generator_cpus() if opts.pin else cpus()
    threads = max(1, min(opts.threads or len(wrk_cpus), opts.connections))
    report = WrkReport(opts.scenario, out_dir, opts.connections, threads, opts.duration_s, opts.model, len(cpus()))
    if opts.scenario == "gateways":
        gateways_bench.run(opts, settings, report, progress)
        _sanity(report, opts)
        (out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        return report
    s = servers.bench_settings(settings, repository, out_dir / "var")
    pids: dict[str, list[int]] = {"triton": [], "gateway": [], "baseline": [], "ingester": []}
    infer = f"/v2/models/{opts.model}/infer"
    with contextlib.ExitStack() as stack:
        progress(f"starting Triton over {repository}")
        urls = {"triton": stack.enter_context(servers.triton(s, opts.pin, pids["triton"]))}
        creds: tuple[str, str] | None = None
        if opts.scenario in ("gateway", "cache"):
            progress("starting the gateway" + (" with the prediction cache on" if opts.scenario == "cache" else ""))
            # The gateway scenario measures the front door without the cache, whatever the caller's environment says.
            extra = {"MLSTACK_GATEWAY_PREDICTION_CACHE": "true" if opts.scenario == "cache" else "false"}
            if opts.ingester == "external":  # as `mlstack up` runs it: history's CPU is reported apart from the gateway's
                extra["MLSTACK_GATEWAY_INGESTER"] = "external"
                stack.enter_context(servers.ingester(s, out_dir / "ingester.log", pids["ingester"]))
            urls["gateway"], *rest = stack.enter_context(servers.gateway(s, out_dir / "gateway-server.log", opts.pin,
                                                                         pids["gateway"], extra))
            creds = (rest[0], rest[1])
        if opts.scenario in ("triton", "gateway"):
            progress("starting the baseline (FastAPI + onnxruntime, one process)")
            urls["baseline"] = stack.enter_context(servers.baseline(model_dir, out_dir / "baseline-server.log", opts.pin,
                                                                    pids["baseline"]))
        trees = {name: p[0] for name, p in pids.items() if p}
        target = {"triton": "triton", "direct": "triton", "baseline": "baseline", "gateway": "gateway", "hit": "gateway",
                  "miss": "gateway"}
        for rnd in range(1, opts.rounds + 1):
            for name in LEGS[opts.scenario]:
                host = urls[target[name]]
                token = servers.login(host, *creds) if target[name] == "gateway" and creds else None
                mode = "fixed" if name == "hit" else "random"
                progress(f"round {rnd}/{opts.rounds} {name}: wrk -c {opts.connections} -t {threads} for {opts.duration_s:g}s "
                         f"({mode} rows) against {host}")
                served = {t: trees[t] for t in SERVES[name] if t in trees}
                hits_before = _cache_hits(host, opts.model, s) if name in ("hit", "miss") else None
                before = cpu.snapshot(served)
                result = wrk.run(host + infer, connections=opts.connections, duration_s=opts.duration_s, threads=threads,
                                 mode=mode, width=width, input_name=input_name, token=token,
                                 log=out_dir / f"{name}-{rnd}.wrk.log", cpu_prefix=pin_prefix(wrk_cpus) if opts.pin else None)
                _settle(served.get("ingester"))
                after = cpu.snapshot(served)
                hits = None if hits_before is None else _cache_hits(host, opts.model, s) - hits_before
                report.runs.append(LegRun(name, rnd, result, cpu.ms_per_request(before, after, result.requests), cpu.load_average(),
                                          hits))
                if result.bad_sample:
                    report.notes.append(f"{name} round {rnd}: {result.bad_responses} bad responses, e.g. {result.bad_sample[:200]}")
        if opts.scenario in ("gateway", "cache"):
            stack.close()  # the gateway stops, then the ingester ingests what the journal still holds
            ok = sum(r.run.requests - r.run.errors for r in report.runs if target[r.name] == "gateway")
            report.history = check_history_rows(s, ok, report.notes)
    _sanity(report, opts)
    (out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _settle(ingester_pid: int | None = None) -> None:
    """Let in-flight requests finish; with an external ingester, also wait until it is idle (it works a backlog after
    the leg, whose CPU belongs to the leg)."""
    time.sleep(SETTLE_S)
    if ingester_pid is None:
        return
    deadline = time.monotonic() + INGESTER_SETTLE_MAX_S
    last = cpu.tree_cpu_s(ingester_pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)  # longer than its 0.2 s poll: two polls without work
        now = cpu.tree_cpu_s(ingester_pid)
        if now - last < 0.01:
            return
        last = now


def _input_of(config: Path) -> tuple[str, int]:
    """(input name, row width) of a one-input tabular model; ("input", 4) when the config does not say."""
    try:
        cfg = read_config(config)
        spec = cfg.input[0]
        dims = [d for d in spec.dims if d > 0]
        return spec.name, dims[-1] if dims else 4
    except Exception as exc:  # an unreadable config: the requests themselves will report the model's state
        logger.warning("could not read the input of %s: %s", config, exc)
        return "input", 4


def _cache_hits(url: str, model: str, settings: Settings) -> float:
    """The gateway's prediction-cache hit counter for ``model`` (0 when /metrics cannot be read)."""
    token = settings.gateway_metrics_token.get_secret_value() if settings.gateway_metrics_token else ""
    try:
        text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=5).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_prediction_cache_hits_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _sanity(report: WrkReport, opts: WrkOptions) -> None:
    legs = report.legs()
    if opts.scenario == "cache":
        hit, miss = legs.get("hit"), legs.get("miss")
        if hit and hit.cache_hits is not None and hit.cache_hits < 0.9 * (hit.requests - hit.errors):
            report.notes.append(f"hit leg: only {hit.cache_hits:.0f} cache hits for {hit.requests} requests "
                                "(is the cache switched off in the model's config.pbtxt?)")
        if miss and miss.cache_hits:
            report.notes.append(f"miss leg: {miss.cache_hits:.0f} cache hits (random rows repeated?)")
    for leg in legs.values():
        if leg.wrk_cpu_ms and leg.rps and leg.wrk_cpu_ms * leg.rps / 1000 >= 0.9 * report.threads:
            report.notes.append(f"{leg.name}: wrk used {leg.wrk_cpu_ms * leg.rps / 1000:.2f} of its {report.threads} "
                                "thread(s)' cores; the load generator may be the limit")
