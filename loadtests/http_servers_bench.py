"""The same gateway app under uvicorn + httptools (``python -m auth_api``) and under granian, side by side.

``python -m loadtests.http_servers_bench --repository /work/cache/model_repository -c 64 --duration 10 --rounds 2``

One Triton; one gateway process per HTTP server, all up at once on free ports, each with its own var_dir (SQLite
database, JWT key, journal) and otherwise the same settings: ``MLSTACK_GATEWAY_WORKERS=1``, the prediction cache off,
``MLSTACK_GATEWAY_INGESTER=external`` with no ingester running (the journal only grows), so what is measured is the
request path alone. The rate limit stays on, far above the load. wrk legs alternate per round (uvicorn, granian...,
uvicorn, granian...) with the v2 Lua script of ``mlstack bench --engine wrk`` (a random single row per request, the JWT
of a bench user); each leg reports rps, p50/p99, errors and the CPU ms per request of the gateway's process tree
(granian's Rust threads included: they live in the same process) and of Triton's.

Granian runs embedded (``granian.server.embed.Server``, ASGI interface, the lifespan on): one process, one worker, the
app's lifespan and the gRPC pass-through server on the same event loop, like ``auth_api.serve.run_single``. Variants
(``--granian``, repeatable): ``uvloop`` or ``asyncio`` loop, then optional ``-rtN`` (Rust runtime threads),
``-bpN`` (backpressure: requests in flight per worker), ``-h1`` (HTTP/1 only instead of auto), ``-rust`` (granian's
own task implementation instead of asyncio's, experimental) and ``-mp``: granian's
own multiprocess server instead (what ``granian --interface asgi --factory --workers 1`` runs: a main process and one
worker process, the app built by ``granian_app`` in the worker, ``-mt`` for its multi-threaded Rust runtime instead of
``st``), e.g. ``uvloop-rt2`` or ``uvloop-mp``. The granian gateways are this module run as ``--serve-granian VARIANT``
(settings from the MLSTACK_* environment).

``--uvicorn-stock`` adds a leg ``uvicorn-httptools``: uvicorn with its stock ``http="httptools"`` protocol (run_single's
loop, switch interval and app), for when ``python -m auth_api`` runs a protocol of its own (auth_api/http_protocol.py).

Measured (2-core box, shared, load average 6-12): granian takes ~0.05-0.1 ms/request off the event-loop thread (HTTP
parsing and the response in Rust) but its Rust runtime thread adds 0.07-0.14 ms (0.1-0.35 ms at c=1); the gateway's
total CPU per request was never >10 % below uvicorn's in both rounds of a run (c=64, 10 rounds over 6 runs: x0.79-1.70,
median x1.19; c=1: x1.24-1.54), so uvicorn stays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from loadtests import cpu, servers, wrk
from loadtests.locust_run import cpus
from loadtests.wrk_bench import SETTLE_S, _input_of
from mlstack.settings import Settings, get_settings

logger = logging.getLogger(__name__)

INFER = "/v2/models/{model}/infer"
GATEWAY_ENV = {"MLSTACK_GATEWAY_WORKERS": "1", "MLSTACK_GATEWAY_INGESTER": "external",
               "MLSTACK_GATEWAY_PREDICTION_CACHE": "false"}


@dataclass(frozen=True)
class GranianVariant:
    """How one granian gateway is configured (``uvloop``, ``asyncio-rt2``, ``uvloop-bp64-h1``...)."""

    loop: str = "uvloop"
    runtime_threads: int = 1
    backpressure: int | None = None  # granian's default: backlog // workers
    http: str = "auto"
    mp: bool = False  # granian's multiprocess server (a worker process) rather than the embedded one
    runtime_mode: str = "st"  # mp only: Rust runtime per worker, single- or multi-threaded
    task_impl: str = "asyncio"  # "rust": granian's own task implementation (experimental, Python < 3.12)

    @classmethod
    def parse(cls, spec: str) -> GranianVariant:
        loop, *opts = spec.split("-")
        if loop not in ("uvloop", "asyncio"):
            raise ValueError(f"granian variant {spec!r}: the loop is uvloop or asyncio")
        fields: dict[str, Any] = {"loop": loop}
        for opt in opts:
            if opt.startswith("rt") and opt[2:].isdigit():
                fields["runtime_threads"] = int(opt[2:])
            elif opt.startswith("bp") and opt[2:].isdigit():
                fields["backpressure"] = int(opt[2:])
            elif opt == "h1":
                fields["http"] = "1"
            elif opt == "mp":
                fields["mp"] = True
            elif opt == "mt":
                fields["mp"], fields["runtime_mode"] = True, "mt"
            elif opt == "rust":
                fields["task_impl"] = "rust"
            else:
                raise ValueError(f"granian variant {spec!r}: unknown option {opt!r} (rtN, bpN, h1, mp, mt, rust)")
        return cls(**fields)


GRPC_ENV = "MLSTACK_BENCH_GRANIAN_GRPC"


def granian_app() -> Any:
    """The gateway app as run_single builds it (granian's ``--factory`` target in a ``-mp`` worker process)."""
    from auth_api.main import create_app
    from auth_api.serve import SWITCH_INTERVAL_S

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(get_settings(), grpc=os.environ.get(GRPC_ENV, "1") == "1")


def serve_uvicorn_stock() -> None:
    """run_single with uvicorn's own httptools protocol (one process; settings from the MLSTACK_* environment)."""
    import uvicorn
    import uvloop

    from auth_api.main import create_app
    from auth_api.serve import SWITCH_INTERVAL_S

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = uvicorn.Config(create_app(settings), host=settings.gateway_host, port=settings.gateway_http_port,
                            log_level="warning", access_log=False, http="httptools", timeout_graceful_shutdown=10)
    uvloop.run(uvicorn.Server(config).serve())


def serve_granian(variant: GranianVariant, grpc: bool = True) -> None:
    """Serve the gateway app of the MLSTACK_* settings under embedded granian until SIGTERM/SIGINT (as run_single)."""
    from granian.constants import HTTPModes, Interfaces, TaskImpl
    from granian.log import LogLevels
    from granian.server.embed import Server

    from auth_api.main import create_app
    from auth_api.serve import SWITCH_INTERVAL_S

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if variant.mp:
        from granian.constants import Loops, RuntimeModes
        from granian.server import MPServer

        os.environ[GRPC_ENV] = "1" if grpc else "0"
        MPServer("loadtests.http_servers_bench:granian_app", address=settings.gateway_host, port=settings.gateway_http_port,
                 interface=Interfaces.ASGI, workers=1, runtime_mode=RuntimeModes(variant.runtime_mode),
                 runtime_threads=variant.runtime_threads, loop=Loops(variant.loop), backpressure=variant.backpressure,
                 backlog=2048, http=HTTPModes(variant.http), websockets=True, factory=True, task_impl=TaskImpl(variant.task_impl),
                 log_level=LogLevels.warning).serve()
        return
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = create_app(settings, grpc=grpc)
    server = Server(app, address=settings.gateway_host, port=settings.gateway_http_port, interface=Interfaces.ASGI,
                    runtime_threads=variant.runtime_threads, backpressure=variant.backpressure, backlog=2048,
                    http=HTTPModes(variant.http), websockets=True, task_impl=TaskImpl(variant.task_impl),
                    log_level=LogLevels.warning)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    if variant.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


@dataclass
class Leg:
    server: str
    round: int
    run: wrk.WrkRun
    cpu_ms: dict[str, float]
    load: tuple[float, float, float]
    threads: dict[str, float]  # the gateway's CPU ms per request: main thread / other threads, of the process / its child

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "round": self.round, **self.run.as_dict(), "cpu_ms_per_request": self.cpu_ms,
                "gateway_threads_cpu_ms_per_request": self.threads, "load_average": list(self.load)}

    def line(self) -> str:
        r = self.run
        return (f"round {self.round} {self.server:<18} {r.rps:7.0f} rps  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
                f"errors {r.errors:<4d} gateway {self.cpu_ms['gateway']:.3f} ms/req  triton {self.cpu_ms['triton']:.3f}  "
                f"wrk {r.wrk_cpu_s * 1000 / max(1, r.requests):.3f}  load {self.load[0]:.2f}\n    gateway threads: "
                + ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.threads.items(), key=lambda kv: -kv[1]) if v >= 0.002))


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of the main thread and of the other threads (Rust runtime, gRPC, pools...) of ``pid`` and of its
    children (granian's ``-mp`` worker: its main thread runs the event loop)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        procs = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                name = ("main" if int(task.name) == p else "threads") if p == pid else ("child-main" if int(task.name) == p
                                                                                        else "child-threads")
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def bench(repository: Path, model: str, connections: int, duration_s: float, rounds: int, granian: list[str],
          grpc_under_granian: bool, out_root: Path | None, settings: Settings, uvicorn_stock: bool = False) -> dict[str, Any]:
    wrk.executable()
    if granian and importlib.util.find_spec("granian") is None:
        raise RuntimeError("granian is not installed: `make install` (the project's `load` extra) or `pip install granian==2.8.7`")
    variants = {f"granian-{spec}": GranianVariant.parse(spec) for spec in granian}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(out_root or Path(settings.var_dir) / "bench") / f"{stamp}-http-servers"
    out_dir.mkdir(parents=True, exist_ok=True)
    repository = repository.resolve()
    servers.latest_version_dir(repository, model)
    input_name, width = _input_of(repository / model / "config.pbtxt")
    threads = max(1, min(len(cpus()), connections))
    base = servers.bench_settings(settings, repository, out_dir / "var-uvicorn")
    pythonpath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p)
    env = {**GATEWAY_ENV, "PYTHONPATH": pythonpath}
    print(f"http servers bench: c={connections}, {duration_s:g} s legs, {rounds} round(s), wrk -t {threads}, model {model}; "
          "each gateway one process, its own var_dir, MLSTACK_GATEWAY_INGESTER=external with no ingester running "
          "(request path only), prediction cache off" + ("" if grpc_under_granian else "; gRPC off under granian"),
          flush=True)
    legs: list[Leg] = []
    with contextlib.ExitStack() as stack:
        triton_pids: list[int] = []
        stack.enter_context(servers.triton(base, False, triton_pids))
        gateways: dict[str, tuple[str, str, str, int]] = {}
        for name in ("uvicorn", *(["uvicorn-httptools"] if uvicorn_stock else []), *variants):
            s = base if name == "uvicorn" else base.model_copy(update={
                "var_dir": out_dir / f"var-{name}", "gateway_http_port": servers.free_port(),
                "gateway_grpc_port": servers.free_port()})
            command = None
            if name == "uvicorn-httptools":
                command = [sys.executable, "-m", "loadtests.http_servers_bench", "--serve-uvicorn-stock"]
            elif name != "uvicorn":
                command = [sys.executable, "-m", "loadtests.http_servers_bench", "--serve-granian", name.removeprefix("granian-"),
                           *([] if grpc_under_granian else ["--no-grpc"])]
            pids: list[int] = []
            url, user, password = stack.enter_context(servers.gateway(s, out_dir / f"{name}-server.log", False, pids, env,
                                                                      command))
            gateways[name] = (url, user, password, pids[0])
            print(f"{name}: {url} (pid {pids[0]})", flush=True)
        tokens = {name: servers.login(url, user, pw) for name, (url, user, pw, _) in gateways.items()}
        for rnd in range(1, rounds + 1):
            for name, (url, _, _, pid) in gateways.items():
                trees = {"gateway": pid, "triton": triton_pids[0]}
                before, threads_before = cpu.snapshot(trees), thread_cpu_s(pid)
                run = wrk.run(url + INFER.format(model=model), connections=connections, duration_s=duration_s,
                              threads=threads, mode="random", width=width, input_name=input_name, token=tokens[name],
                              log=out_dir / f"{name}-{rnd}.wrk.log")
                time.sleep(SETTLE_S)
                after, threads_after = cpu.snapshot(trees), thread_cpu_s(pid)
                per_thread = {k: (v - threads_before.get(k, 0.0)) * 1000 / max(1, run.requests) for k, v in threads_after.items()}
                leg = Leg(name, rnd, run, cpu.ms_per_request(before, after, run.requests), cpu.load_average(), per_thread)
                legs.append(leg)
                print(leg.line(), flush=True)
                if run.bad_sample:
                    print(f"  {name}: {run.bad_responses} bad responses, e.g. {run.bad_sample[:200]}", flush=True)
    summary = _summary(legs, connections, duration_s, rounds, model)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    print(f"logs and summary.json in {out_dir}", flush=True)
    return summary


def _summary(legs: list[Leg], connections: int, duration_s: float, rounds: int, model: str) -> dict[str, Any]:
    med = statistics.median
    names = list(dict.fromkeys(leg.server for leg in legs))
    per: dict[str, Any] = {}
    for name in names:
        mine = [leg for leg in legs if leg.server == name]
        per[name] = {"rps": med(leg.run.rps for leg in mine), "p50_ms": med(leg.run.p50_ms for leg in mine),
                     "p99_ms": med(leg.run.p99_ms for leg in mine), "errors": sum(leg.run.errors for leg in mine),
                     "requests": sum(leg.run.requests for leg in mine),
                     "gateway_cpu_ms": med(leg.cpu_ms["gateway"] for leg in mine),
                     "triton_cpu_ms": med(leg.cpu_ms["triton"] for leg in mine)}
    # Per round: each granian variant's gateway CPU per request over uvicorn's of the same round.
    ratios = {name: [next(g.cpu_ms["gateway"] for g in legs if g.server == name and g.round == r)
                     / next(u.cpu_ms["gateway"] for u in legs if u.server == "uvicorn" and u.round == r)
                     for r in range(1, rounds + 1)] for name in names if name != "uvicorn"}
    return {"connections": connections, "duration_s": duration_s, "rounds": rounds, "model": model,
            "ingester": "external, not running (request path only)", "servers": per,
            "gateway_cpu_ratio_vs_uvicorn_per_round": ratios, "legs": [leg.as_dict() for leg in legs]}


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"medians over {summary['rounds']} round(s), c={summary['connections']}:")
    for name, s in summary["servers"].items():
        print(f"  {name:<18} {s['rps']:7.0f} rps  p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  errors {s['errors']}"
              f"/{s['requests']}  gateway {s['gateway_cpu_ms']:.3f} ms/req  triton {s['triton_cpu_ms']:.3f} ms/req")
    for name, ratios in summary["gateway_cpu_ratio_vs_uvicorn_per_round"].items():
        print(f"  {name} gateway CPU/request vs uvicorn, per round: " + ", ".join(f"{r:.2f}" for r in ratios))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.http_servers_bench", description=__doc__.split("\n")[0])
    p.add_argument("--repository", type=Path, default=None, help="model repository (default: MLSTACK_REPOSITORY)")
    p.add_argument("--model", default="iris-logreg")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk leg")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--granian", action="append", default=None, metavar="VARIANT",
                   help="a granian configuration to compare (repeatable; default: uvloop)")
    p.add_argument("--no-grpc", action="store_true", help="no gRPC pass-through port under granian")
    p.add_argument("--out", type=Path, default=None, help="output root (default: $MLSTACK_VAR_DIR/bench)")
    p.add_argument("--uvicorn-stock", action="store_true", help="also a leg with uvicorn's stock httptools protocol")
    p.add_argument("--serve-granian", metavar="VARIANT", help=argparse.SUPPRESS)  # a gateway process of the bench
    p.add_argument("--serve-uvicorn-stock", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_uvicorn_stock:
        serve_uvicorn_stock()
        return 0
    if args.serve_granian:
        serve_granian(GranianVariant.parse(args.serve_granian), grpc=not args.no_grpc)
        return 0
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    bench(args.repository or settings.repository, args.model, args.connections, args.duration, args.rounds,
          args.granian or ["uvloop"], not args.no_grpc, args.out, settings, args.uvicorn_stock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
