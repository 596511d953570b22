"""`mlstack bench gateway --engine wrk --gateways N`: N gateway processes sharing Redis vs one, and the cost of the shared state.

One Triton; one gateway without Redis (``local``: its own database and var_dir) and N gateways with ``MLSTACK_REDIS_URL``
on consecutive ports sharing one var_dir (one database, one JWT key, one journal folder), every gateway one process
(``MLSTACK_GATEWAY_WORKERS=1``, so N gateways are N processes). The rate limit is on in every leg but set far above the
load (it still runs the Redis token-bucket script once per request, but never refuses one). Legs, alternating per round:

- ``gw1-local``: gateway ``local`` alone, per-process buckets;
- ``gw1-redis``: the first Redis gateway alone;
- ``gwN-redis``: all N Redis gateways — one wrk whose threads are spread over the gateways by the Lua ``setup()``
  (``thread.addr``, from ``MLSTACK_BENCH_ADDRS``), so the latencies stay one histogram and the connections split evenly.

Per leg: gateway CPU ms/request (every gateway of the leg), Triton's, Redis' own CPU when its pid is readable, and from
Redis ``INFO commandstats`` deltas the commands per request and the server-side µs per command. After the legs, the
loopback round trip of the token-bucket script is timed from an idle client (``redis_rtt``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from loadtests import cpu, servers, wrk
from loadtests.harness import check_history_rows
from loadtests.locust_run import cpus, generator_cpus, pin_prefix, server_cpus
from mlstack.settings import Settings

# Redis counts the commands a script runs in commandstats too (and their time inside the script's): these are the
# token-bucket script's, not round trips.
SCRIPT_INNER = frozenset({"time", "hmget", "hset", "pexpire"})
HIGH_LIMIT = "1000000"  # requests/s and burst: the bucket script runs, the limit never refuses
RTT_SAMPLES = 2000


class RedisRequired(ValueError):
    """More than one gateway without MLSTACK_REDIS_URL."""


def require_redis(gateways: int, redis_url: str | None) -> str:
    if not redis_url:
        raise RedisRequired(f"--gateways {gateways} compares gateways sharing state through Redis: set MLSTACK_REDIS_URL, "
                            "e.g. MLSTACK_REDIS_URL=redis://127.0.0.1:6379/0")
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisRequired(f"Redis at {redis_url} is not reachable ({type(exc).__name__}): start it, e.g. "
                            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''") from exc
    finally:
        client.close()
    return redis_url


def legs(gateways: int) -> tuple[str, ...]:
    return ("gw1-local", "gw1-redis") + ((f"gw{gateways}-redis",) if gateways > 1 else ())


def _consecutive_ports(n: int) -> int:
    from mlstack.process import port_in_use

    while True:
        first = servers.free_port()
        if all(not port_in_use("127.0.0.1", first + i) for i in range(1, n)):
            return first


@contextlib.contextmanager
def _gateway(settings: Settings, env: dict[str, str], log: Path, pin: bool, pids: list[int]) -> Iterator[str]:
    argv = [*(pin_prefix(server_cpus()) if pin else []), sys.executable, "-m", "auth_api"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    pids.append(proc.pid)
    try:
        url = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
        servers.wait_http(f"{url}/health/ready", proc, log)
        yield url
    finally:
        servers.stop(proc)


def _env(settings: Settings, redis_url: str | None, admin_pw: str, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **servers._env(settings), "MLSTACK_ADMIN_PASSWORD": admin_pw, "MLSTACK_GATEWAY_WORKERS": "1",
           "MLSTACK_GATEWAY_PREDICTION_CACHE": "false", "MLSTACK_GATEWAY_RATE_LIMIT_RPS": HIGH_LIMIT,
           "MLSTACK_GATEWAY_RATE_LIMIT_BURST": HIGH_LIMIT, **extra}
    env.pop("MLSTACK_DATABASE_URL", None)
    env.pop("MLSTACK_REDIS_URL", None)
    if redis_url:
        env["MLSTACK_REDIS_URL"] = redis_url
    return env


def _bench_user(url: str, admin_pw: str, settings: Settings) -> tuple[str, str]:
    pw = secrets.token_urlsafe(16)
    admin = servers.login(url, settings.admin_username, admin_pw)
    r = httpx.post(f"{url}/api/v1/users", json={"username": "bench", "password": pw, "role": "user"},
                   headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    if r.status_code != 201:
        raise RuntimeError(f"could not create the bench user: HTTP {r.status_code} {r.text[:300]}")
    return "bench", pw


def commandstats(client: Any) -> dict[str, tuple[float, float]]:
    """command -> (calls, usec) so far."""
    return {k.removeprefix("cmdstat_"): (float(v["calls"]), float(v["usec"])) for k, v in client.info("commandstats").items()}


def _delta(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    out = {k: (v[0] - a.get(k, (0.0, 0.0))[0], v[1] - a.get(k, (0.0, 0.0))[1]) for k, v in b.items()}
    return {k: v for k, v in out.items() if v[0] > 0 and k not in ("info", "ping")}  # the bench's own INFO calls


@contextlib.contextmanager
def private_redis(log: Path) -> Iterator[str | None]:
    """A redis-server of the bench's own on a free port (no persistence), so its commandstats and CPU are the gateways'
    alone; None when redis-server is not on PATH (then the configured Redis is measured, other clients included)."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = servers.free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                                stdout=out, stderr=subprocess.STDOUT)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; log {log}") from None
                time.sleep(0.05)
        yield url
    finally:
        servers.stop(proc)


def redis_pid(client: Any) -> int | None:
    """redis-server's pid when it runs on this host and its CPU times are readable."""
    import psutil

    pid = int(client.info("server").get("process_id", 0))
    try:
        psutil.Process(pid).cpu_times()
    except (psutil.Error, ValueError):
        return None
    return pid


def script_rtt(client: Any, samples: int = RTT_SAMPLES) -> dict[str, float]:
    """Loopback round trip (µs) of the gateway's token-bucket script, timed from an idle client: p50, p99, mean."""
    from auth_api.core.limits import TOKEN_BUCKET_LUA

    script = client.register_script(TOKEN_BUCKET_LUA)
    key = f"mlstack:rl:bench-rtt:{secrets.token_hex(4)}"
    script(keys=[key], args=[1e6, 1e6])  # loads the script
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        script(keys=[key], args=[1e6, 1e6])
        times.append((time.perf_counter() - t0) * 1e6)
    client.delete(key)
    times.sort()
    return {"p50_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99)], "mean_us": statistics.fmean(times),
            "samples": float(samples)}


def run(opts: Any, settings: Settings, report: Any, progress: Callable[[str], None]) -> None:
    """Fill ``report`` (a wrk_bench.WrkReport) with the legs of ``legs(opts.gateways)``; ``opts`` is a WrkOptions."""
    n = opts.gateways
    out_dir: Path = report.out_dir
    with private_redis(out_dir / "redis-server.log") as own:
        if own is None:
            report.notes.append("redis-server is not on PATH: measured the configured Redis, whose commandstats and CPU "
                                "include every other client")
        _run(opts, settings, report, progress, own or require_redis(n, settings.redis_url))


def _run(opts: Any, settings: Settings, report: Any, progress: Callable[[str], None], redis_url: str) -> None:
    import redis

    from loadtests.wrk_bench import LegRun, _input_of, _settle

    n = opts.gateways
    out_dir: Path = report.out_dir
    repository = Path(opts.repository or settings.repository).resolve()
    servers.latest_version_dir(repository, opts.model)
    input_name, width = _input_of(repository / opts.model / "config.pbtxt")
    wrk_cpus = generator_cpus() if opts.pin else cpus()
    s = servers.bench_settings(settings, repository, out_dir / "var")
    local = s.model_copy(update={"var_dir": out_dir / "var-local", "gateway_http_port": servers.free_port(),
                                 "gateway_grpc_port": servers.free_port()})
    first = _consecutive_ports(n)
    shared = [s.model_copy(update={"gateway_http_port": first + i, "gateway_grpc_port": servers.free_port()}) for i in range(n)]
    client = redis.Redis.from_url(redis_url)
    pids: dict[str, list[int]] = {"triton": []}
    admin_pw = secrets.token_urlsafe(16)
    infer = f"/v2/models/{opts.model}/infer"
    try:
        rpid = redis_pid(client)
        if rpid is None:
            report.notes.append("redis-server's CPU is not readable from here (another host or user): redis CPU not charged")
        with contextlib.ExitStack() as stack:
            progress(f"starting Triton over {repository}")
            stack.enter_context(servers.triton(s, opts.pin, pids["triton"]))
            urls: dict[str, str] = {}
            progress("starting gateway local (no Redis)")
            pids["local"] = []
            urls["local"] = stack.enter_context(_gateway(local, _env(local, None, admin_pw, {}), out_dir / "gateway-local.log",
                                                         opts.pin, pids["local"]))
            local_user = _bench_user(urls["local"], admin_pw, local)
            for i, g in enumerate(shared, 1):
                progress(f"starting gateway {i}/{n} with Redis on port {g.gateway_http_port}")
                pids[f"gw{i}"] = []
                urls[f"gw{i}"] = stack.enter_context(_gateway(g, _env(g, redis_url, admin_pw, {}),
                                                              out_dir / f"gateway-{i}.log", opts.pin, pids[f"gw{i}"]))
                if i == 1:
                    shared_user = _bench_user(urls["gw1"], admin_pw, g)
            members = {"gw1-local": ["local"], "gw1-redis": ["gw1"], f"gw{n}-redis": [f"gw{i}" for i in range(1, n + 1)]}
            for rnd in range(1, opts.rounds + 1):
                for name in legs(n):
                    gws = members[name]
                    user = local_user if gws == ["local"] else shared_user
                    token = servers.login(urls[gws[0]], *user)
                    threads = _threads(opts.threads or len(wrk_cpus), len(gws), opts.connections)
                    addrs = ",".join(urls[g].removeprefix("http://") for g in gws) if len(gws) > 1 else None
                    progress(f"round {rnd}/{opts.rounds} {name}: wrk -c {opts.connections} -t {threads} for {opts.duration_s:g}s "
                             f"over {', '.join(urls[g] for g in gws)}")
                    trees = {g: pids[g][0] for g in gws} | {"triton": pids["triton"][0]} | ({"redis": rpid} if rpid else {})
                    before, stats0 = cpu.snapshot(trees), commandstats(client)
                    result = wrk.run(urls[gws[0]] + infer, connections=opts.connections, duration_s=opts.duration_s,
                                     threads=threads, width=width, input_name=input_name, token=token, addrs=addrs,
                                     log=out_dir / f"{name}-{rnd}.wrk.log", cpu_prefix=pin_prefix(wrk_cpus) if opts.pin else None)
                    _settle()
                    after, stats1 = cpu.snapshot(trees), commandstats(client)
                    per = cpu.ms_per_request(before, after, result.requests)
                    cpu_ms = {"gateway": sum(per[g] for g in gws), "triton": per["triton"], **({"redis": per["redis"]} if rpid else {})}
                    delta = _delta(stats0, stats1)
                    top = {k: v for k, v in delta.items() if k not in SCRIPT_INNER}
                    trips, usec = sum(c for c, _ in top.values()), sum(u for _, u in top.values())
                    requests = max(1, result.requests)
                    extra = {"redis_round_trips_per_request": trips / requests, "redis_usec_per_round_trip": usec / trips if trips else 0.0,
                             "redis_commands_per_request": sum(c for c, _ in delta.values()) / requests,
                             "gateways": float(len(gws)), **{f"redis:{k}": c / requests for k, (c, _) in delta.items()},
                             **({f"cpu_ms:{g}": per[g] for g in gws} if len(gws) > 1 else {})}
                    report.runs.append(LegRun(name, rnd, result, cpu_ms, cpu.load_average(), extra=extra))
                    if result.bad_sample:
                        report.notes.append(f"{name} round {rnd}: {result.bad_responses} bad responses, e.g. {result.bad_sample[:200]}")
            progress(f"timing the token-bucket script's round trip ({RTT_SAMPLES} calls from an idle client)")
            report.redis_rtt = script_rtt(client)
            stack.close()  # the gateways drain their journals on stop
        ok_local = sum(r.run.requests - r.run.errors for r in report.runs if r.name == "gw1-local")
        ok_shared = sum(r.run.requests - r.run.errors for r in report.runs if r.name != "gw1-local")
        h_local, h_shared = check_history_rows(local, ok_local, report.notes), check_history_rows(s, ok_shared, report.notes)
        if h_local and h_shared:
            report.history = {k: h_local[k] + h_shared[k] for k in h_local}
    finally:
        client.close()


def _threads(wanted: int, gateways: int, connections: int) -> int:
    """wrk threads: at least one per gateway and a multiple of the gateways (each thread keeps to one gateway)."""
    t = -(-max(wanted, gateways) // gateways) * gateways
    return max(gateways, min(t, connections) // gateways * gateways)


def shared_state_cost(report: Any) -> dict[str, float] | None:
    """The figures of the README line, from the legs' medians: gateway (+ Redis) CPU ms/request that Redis adds, the
    Redis commands per request and their round trip, and the throughput of N gateways over one (both with Redis)."""
    legs = report.legs()
    local, one = legs.get("gw1-local"), legs.get("gw1-redis")
    if local is None or one is None:
        return None
    many = next((v for k, v in legs.items() if k not in ("gw1-local", "gw1-redis")), None)
    out = {"gateway_cpu_ms_local": local.cpu_ms["gateway"], "gateway_cpu_ms_redis": one.cpu_ms["gateway"],
           "added_gateway_cpu_ms": one.cpu_ms["gateway"] - local.cpu_ms["gateway"],
           "redis_cpu_ms": one.cpu_ms.get("redis", 0.0) - local.cpu_ms.get("redis", 0.0),
           "redis_round_trips_per_request": one.extra["redis_round_trips_per_request"],
           "redis_usec_per_round_trip": one.extra["redis_usec_per_round_trip"],
           "rtt_p50_us": (report.redis_rtt or {}).get("p50_us", 0.0),
           "redis_vs_local_rps": one.rps / local.rps if local.rps else 0.0,
           "redis_vs_local_p99": one.p99_ms / local.p99_ms if local.p99_ms else 0.0}
    out["added_cpu_ms"] = out["added_gateway_cpu_ms"] + out["redis_cpu_ms"]
    if many is not None:
        out.update({"gateways": many.extra["gateways"], "n_vs_1_rps": many.rps / one.rps if one.rps else 0.0,
                    "n_vs_1_p99": many.p99_ms / one.p99_ms if one.p99_ms else 0.0})
    return out


def headline(report: Any) -> str | None:
    """The one-line summary: "shared state costs X ms CPU and Y Redis round trip per request; N gateways ... give Z× of 1"."""
    c = shared_state_cost(report)
    if c is None:
        return None
    line = (f"shared state costs {c['added_cpu_ms']:+.3f} ms CPU (gateway {c['added_gateway_cpu_ms']:+.3f}, Redis "
            f"{c['redis_cpu_ms']:.3f}) and {c['redis_round_trips_per_request']:.2f} Redis round trip "
            f"({c['rtt_p50_us']:.0f} µs idle loopback, {c['redis_usec_per_round_trip']:.1f} µs in Redis) per request")
    if "gateways" in c:
        line += (f"; {c['gateways']:.0f} gateways on {report.cpu_count} cores give {c['n_vs_1_rps']:.2f}× the throughput of 1 "
                 f"(p99 × {c['n_vs_1_p99']:.2f})")
    return line
