"""``classify_image`` through the gateway with stored inputs off vs on, same run, same task service.

    mlstack bench stored-inputs [--repository <repo with digits-cnn>] [--users 8] [--duration 20s] [--rounds 2]
    python -m loadtests.stored_inputs_bench --repository <repo with digits-cnn> [--concurrency 8] [--seconds 20] [--rounds 2]

Two gateways (``python -m auth_api``, SQLite, one bench user each) in front of one ``bentoml serve`` (local onnxruntime
runner); legs alternate off, on, off, on; every request uploads a PNG no earlier request sent, so every "on" request stores a new
object (no dedupe shortcut). Prints rps and p50/p99 per leg and the on/off throughput ratio (median of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from loadtests import servers
from mlstack.settings import Settings


def images(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def leg(url: str, token: str, pngs: list[bytes], counter: Iterator[int], concurrency: int, seconds: float,
              ) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            data = pngs[next(counter) % len(pngs)]
            t0 = time.perf_counter()
            r = await c.post("/api/v1/tasks/classify_image", files={"image": ("x.png", data, "image/png")})
            lat.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat.sort()
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / wall, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000}


@contextlib.contextmanager
def gateway(settings: Settings, log: Path, extra_env: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """``python -m auth_api`` (no Triton behind it: only the task service is used, so it waits for liveness, not
    readiness) with a bench user; yields (url, username, password)."""
    admin_pw, user_pw = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    keys = ("repository", "var_dir", "triton_host", "triton_http_port", "triton_grpc_port", "gateway_host", "gateway_http_port",
            "gateway_grpc_port")
    env = {**os.environ, **{f"MLSTACK_{k.upper()}": str(getattr(settings, k)) for k in keys}, **extra_env,
           "MLSTACK_ADMIN_PASSWORD": admin_pw}
    env.pop("MLSTACK_DATABASE_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "auth_api"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
        servers.wait_http(f"{url}/health/live", proc, log)
        admin = servers.login(url, settings.admin_username, admin_pw)
        r = httpx.post(f"{url}/api/v1/users", json={"username": "bench", "password": user_pw, "role": "user"},
                       headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        r.raise_for_status()
        yield url, "bench", user_pw
    finally:
        servers.stop(proc)


@dataclass
class StoredInputsReport:
    legs: dict[str, list[dict[str, float]]]  # "off" / "on": one leg per round
    ratio: float  # median over rounds of on rps / off rps
    stored: int  # objects the "on" gateway wrote

    @property
    def failure_ratio(self) -> float:
        legs = [r for rounds in self.legs.values() for r in rounds]
        return sum(r["errors"] for r in legs) / max(1.0, sum(r["requests"] for r in legs))


def run(repository: Path, *, concurrency: int = 8, seconds: float = 20.0, rounds: int = 2, n_images: int = 8000,
        say: Callable[[str], None] = print) -> StoredInputsReport:
    """The off/on legs against one task service (``repository`` must hold digits-cnn); ``say`` gets each leg's line."""
    pngs = images(n_images)
    counter = itertools.count()  # shared by every leg: no image is sent twice (while n_images lasts)
    with tempfile.TemporaryDirectory(prefix="stored-inputs-bench-", ignore_cleanup_errors=True) as tmp:
        say(f"work dir: {tmp}")
        base = servers.bench_settings(Settings(), repository.resolve(), Path(tmp) / "bento")
        base = base.model_copy(update={"bento_runner": "local"})
        with servers.bento(base, pin=False) as bento_url:
            bento_env = {"MLSTACK_BENTO_HOST": base.bento_host, "MLSTACK_BENTO_PORT": str(base.bento_port)}
            legs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
            off = servers.bench_settings(base, base.repository, Path(tmp) / "off")
            on = servers.bench_settings(base, base.repository, Path(tmp) / "on")
            keep = {"MLSTACK_STORAGE_KEEP_BY": json.dumps({"classify_image": "input"})}
            with gateway(off, Path(tmp) / "off.log", bento_env) as (u_off, user, pw_off), \
                    gateway(on, Path(tmp) / "on.log", {**bento_env, **keep}) as (u_on, _, pw_on):
                t_off, t_on = servers.login(u_off, user, pw_off), servers.login(u_on, user, pw_on)
                asyncio.run(leg(u_off, t_off, pngs, counter, concurrency, 3))  # warm both paths
                asyncio.run(leg(u_on, t_on, pngs, counter, concurrency, 3))
                for _ in range(rounds):
                    for name, u, t in (("off", u_off, t_off), ("on", u_on, t_on)):
                        r = asyncio.run(leg(u, t, pngs, counter, concurrency, seconds))
                        legs[name].append(r)
                        say(f"{name:>3}: {r['rps']:.1f} rps, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                            f"{r['errors']:.0f} errors / {r['requests']:.0f}")
                stored = sum(1 for _ in (Path(tmp) / "on" / "objects").rglob("*.png"))
        say(f"bento: {bento_url}; objects stored by the 'on' gateway: {stored}")
    ratio = statistics.median(legs["on"][i]["rps"] / legs["off"][i]["rps"] for i in range(rounds))
    return StoredInputsReport(legs, ratio, stored)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=8000, help="Distinct 64x64 PNGs (every stored one is a new object).")
    args = ap.parse_args()
    report = run(args.repository, concurrency=args.concurrency, seconds=args.seconds, rounds=args.rounds, n_images=args.images,
                 say=lambda line: print(line, flush=True))
    print(f"throughput with stored inputs / without: {report.ratio:.2f} (median of {args.rounds} rounds, c={args.concurrency})")


if __name__ == "__main__":
    main()
