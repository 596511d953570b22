"""`mlstack bench ws`: N WebSocket connections each streaming 64x64 PNG digits at F frames/s (open loop) through the
gateway; reports answered frames/s, send -> answer latency, dropped frames, errors and each server's CPU."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests import cpu, servers
from loadtests.ws_frames import digit_pngs
from mlstack.settings import Settings


@dataclass
class WsReport:
    connections: int
    fps: float
    duration_s: float
    model: str
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    errors: int = 0
    wrong: int = 0  # answered with a label other than the digit sent
    latencies_ms: list[float] = field(default_factory=list)  # send -> answer, on the client
    server_ms: list[float] = field(default_factory=list)  # the answers' latency_ms: frame read -> answer sent, in the gateway
    send_lag_ms: list[float] = field(default_factory=list)  # a frame's send done vs its schedule (the client or TCP behind)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def answered_per_s(self) -> float:
        return self.answered / self.duration_s if self.duration_s else 0.0

    def pct(self, q: float, server: bool = False, lag: bool = False) -> float:
        values = self.send_lag_ms if lag else self.server_ms if server else self.latencies_ms
        return float(np.percentile(values, q)) if values else float("nan")


async def _stream(url: str, token: str, model: str, fps: float, duration_s: float, report: WsReport) -> None:
    from websockets.asyncio.client import connect

    frames = [(label, base64.b64encode(png).decode()) for label, png in digit_pngs()]
    sent_at: dict[int, tuple[float, int]] = {}
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=2**22) as ws:
        json.loads(await ws.recv())  # ready

        async def receive() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "prediction":
                    t0, label = sent_at.pop(msg["request_id"])
                    report.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                    report.server_ms.append(float(msg.get("latency_ms") or 0.0))
                    report.answered += 1
                    report.wrong += msg.get("label") != str(label)
                elif msg["type"] == "dropped":
                    report.dropped += msg["count"]
                elif msg["type"] == "error":
                    report.errors += 1

        reader = asyncio.create_task(receive())
        period, start, i = 1.0 / fps, time.perf_counter(), 0
        # Connections start spread over one period so the frames of N clients do not arrive in lock step.
        await asyncio.sleep(period * (hash(id(ws)) % 1000) / 1000)
        while (now := time.perf_counter()) - start < duration_s:
            label, b64 = frames[i % len(frames)]
            sent_at[i] = (now, label)
            await ws.send(json.dumps({"command": "predict", "model": model, "image": b64, "request_id": i}))
            report.send_lag_ms.append((time.perf_counter() - (start + i * period)) * 1000.0)
            report.sent += 1
            i += 1
            await asyncio.sleep(max(0.0, start + i * period - time.perf_counter()))
        await asyncio.sleep(1.5)  # late answers and the last dropped notice
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _drive(url: str, token: str, connections: int, fps: float, duration_s: float, model: str, report: WsReport) -> None:
    await asyncio.gather(*(_stream(url, token, model, fps, duration_s, report) for _ in range(connections)))


def run(base: Settings, *, connections: int, fps: float, duration_s: float, model: str, repository: Path,
        progress: Callable[[str], None] = print) -> WsReport:
    """Start Triton and a gateway on free ports, stream for ``duration_s``, stop them; the report of that run."""
    report = WsReport(connections, fps, duration_s, model)
    with tempfile.TemporaryDirectory(prefix="mlstack-bench-ws-") as tmp, contextlib.ExitStack() as stack:
        s = servers.bench_settings(base, repository, Path(tmp) / "var")
        pids: list[int] = []
        progress(f"starting Triton over {repository}")
        stack.enter_context(servers.triton(s, pin=False, pids=pids))
        progress("starting the gateway")
        url, user, password = stack.enter_context(servers.gateway(
            s, Path(tmp) / "gateway.log", pin=False, pids=pids,
            extra_env={"MLSTACK_GATEWAY_WS_MAX_CONNECTIONS_PER_USER": str(max(connections, s.gateway_ws_max_connections_per_user))}))
        token = servers.login(url, user, password)
        trees = {"triton": pids[0], "gateway": pids[1]}
        progress(f"{connections} connections x {fps:g} frames/s for {duration_s:g}s ({model})")
        before, t0, own = cpu.snapshot(trees), time.perf_counter(), time.process_time()
        asyncio.run(_drive(url.replace("http://", "ws://") + "/api/v1/ws", token, connections, fps, duration_s, model, report))
        wall = time.perf_counter() - t0
        after = cpu.snapshot(trees)
        report.cpu_pct = {k: (after[k] - before[k]) * 100.0 / wall for k in trees}
        report.cpu_pct["client"] = (time.process_time() - own) * 100.0 / wall  # the load generator itself
        report.load_average = cpu.load_average()
    return report
