"""gRPC pass-through cost: ``tritonclient.grpc.aio`` with many concurrent calls, Triton direct vs through the gateway.

``python -m loadtests.grpc_passthrough --repository <repo> [--streams 64] [--duration 10] [--rounds 2] [--floor]`` starts
Triton and the gateway (``MLSTACK_GATEWAY_WORKERS`` from the environment) on free ports, alternates direct and gateway
legs and prints rps, p50/p99 and CPU ms per request of each server tree and of the client itself (no ghz here).
``--floor`` adds a leg through a bare ``grpc.aio`` pass-through (the gateway's loop, server and channel, and nothing
else: no auth, checks, history or metrics), so the gateway's figure reads against what gRPC-aio itself costs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def serve_floor(port: int, upstream: str) -> None:
    """A bare grpc.aio pass-through on ``port`` to ``upstream``: raw bytes both ways, one multicallable per method."""
    import grpc
    import uvloop
    from grpc import aio

    opts = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30),
            ("grpc.enable_channelz", 0)]

    async def main() -> None:
        channel = aio.insecure_channel(upstream, options=opts)
        handlers: dict[str, grpc.RpcMethodHandler] = {}

        class Forward(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                handler = handlers.get(details.method)
                if handler is None:
                    call = channel.unary_unary(details.method)

                    async def forward(request: bytes, context: aio.ServicerContext) -> Any:
                        return await call(request)

                    handler = handlers[details.method] = grpc.unary_unary_rpc_method_handler(forward)
                return handler

        server = aio.server(options=opts)
        server.add_generic_rpc_handlers([Forward()])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


@contextlib.contextmanager
def _floor(upstream: str, log: Path, pids: list[int]) -> Iterator[str]:
    """``serve_floor`` in its own process; yields its address once it accepts connections."""
    import grpc

    port = servers.free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "loadtests.grpc_passthrough", "--serve-floor", str(port),
                                 "--upstream", upstream], stdout=out, stderr=subprocess.STDOUT)
    pids.append(proc.pid)
    try:
        url = f"127.0.0.1:{port}"
        with grpc.insecure_channel(url) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
        yield url
    finally:
        servers.stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", type=Path)
    ap.add_argument("--model", default="iris-logreg")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--floor", action="store_true", help="add a leg through a bare grpc.aio pass-through")
    ap.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_floor is not None:
        serve_floor(args.serve_floor, args.upstream)
        return
    if args.repository is None:
        ap.error("--repository is required")
    base = Settings()
    out = Path(base.var_dir) / "bench" / f"grpc-{int(time.time())}"
    out.mkdir(parents=True, exist_ok=True)
    s = servers.bench_settings(base, args.repository.resolve(), out / "var")
    pids: dict[str, list[int]] = {"triton": [], "gateway": [], "floor": []}
    me = psutil.Process(os.getpid())
    with contextlib.ExitStack() as stack:
        stack.enter_context(servers.triton(s, False, pids["triton"]))
        gw_url, user, pw = stack.enter_context(servers.gateway(s, out / "gateway.log", False, pids["gateway"]))
        token = servers.login(gw_url, user, pw)
        targets = {"direct": (f"127.0.0.1:{s.triton_grpc_port}", None), "gateway": (f"127.0.0.1:{s.gateway_grpc_port}", token)}
        if args.floor:
            targets["floor"] = (stack.enter_context(_floor(f"127.0.0.1:{s.triton_grpc_port}", out / "floor.log",
                                                           pids["floor"])), None)
        trees = {name: p[0] for name, p in pids.items() if p}
        for rnd in range(1, args.rounds + 1):
            for leg, (url, tok) in targets.items():
                before, c0 = cpu.snapshot(trees), sum(me.cpu_times()[:2])
                n, lat = asyncio.run(_leg(url, args.model, args.streams, args.duration, tok))
                after, c1 = cpu.snapshot(trees), sum(me.cpu_times()[:2])
                ms = cpu.ms_per_request(before, after, n)
                q = statistics.quantiles(lat, n=100)
                proxy = f"{leg} {ms[leg]:.3f}  " if leg in ms else ""
                print(f"round {rnd} {leg:8s} {n / args.duration:8,.0f} rps  p50 {q[49] * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms  "
                      f"CPU ms/req: {proxy}triton {ms['triton']:.3f}  client {(c1 - c0) * 1000 / n:.3f}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
