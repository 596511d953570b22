"""gRPC pass-through cost: ``tritonclient.grpc.aio`` with many concurrent calls, Triton direct vs through the gateway.

``python -m loadtests.grpc_passthrough --repository <repo> [--streams 64] [--duration 10] [--rounds 2]`` starts Triton and
the gateway (``MLSTACK_GATEWAY_WORKERS`` from the environment) on free ports, alternates direct and gateway legs and
prints rps, p50/p99 and CPU ms per request of each server tree and of the client itself (no ghz here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

import numpy as np
import psutil

from loadtests import cpu, servers
from mlstack.settings import Settings


async def _leg(url: str, model: str, streams: int, duration_s: float, token: str | None) -> tuple[int, list[float]]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url=url)
    headers = {"authorization": f"Bearer {token}"} if token else None
    rng = np.random.default_rng(0)
    lat: list[float] = []
    deadline = time.monotonic() + duration_s

    async def one() -> None:
        while time.monotonic() < deadline:
            inp = grpcclient.InferInput("input", [1, 4], "FP32")
            inp.set_data_from_numpy(rng.uniform(0.5, 7, (1, 4)).astype(np.float32))
            t = time.perf_counter()
            await client.infer(model, [inp], headers=headers)
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(one() for _ in range(streams)))
    await client.close()
    return len(lat), lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--model", default="iris-logreg")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    base = Settings()
    out = Path(base.var_dir) / "bench" / f"grpc-{int(time.time())}"
    out.mkdir(parents=True, exist_ok=True)
    s = servers.bench_settings(base, args.repository.resolve(), out / "var")
    pids: dict[str, list[int]] = {"triton": [], "gateway": []}
    me = psutil.Process(os.getpid())
    with contextlib.ExitStack() as stack:
        stack.enter_context(servers.triton(s, False, pids["triton"]))
        gw_url, user, pw = stack.enter_context(servers.gateway(s, out / "gateway.log", False, pids["gateway"]))
        token = servers.login(gw_url, user, pw)
        trees = {"triton": pids["triton"][0], "gateway": pids["gateway"][0]}
        targets = {"direct": (f"127.0.0.1:{s.triton_grpc_port}", None), "gateway": (f"127.0.0.1:{s.gateway_grpc_port}", token)}
        for rnd in range(1, args.rounds + 1):
            for leg, (url, tok) in targets.items():
                before, c0 = cpu.snapshot(trees), sum(me.cpu_times()[:2])
                n, lat = asyncio.run(_leg(url, args.model, args.streams, args.duration, tok))
                after, c1 = cpu.snapshot(trees), sum(me.cpu_times()[:2])
                ms = cpu.ms_per_request(before, after, n)
                q = statistics.quantiles(lat, n=100)
                print(f"round {rnd} {leg:8s} {n / args.duration:8,.0f} rps  p50 {q[49] * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms  "
                      f"CPU ms/req: triton {ms['triton']:.3f}  gateway {ms['gateway'] if leg == 'gateway' else 0:.3f}  "
                      f"client {(c1 - c0) * 1000 / n:.3f}  load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
