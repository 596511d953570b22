"""No client-visible 500 for a transport hiccup between our own tiers: 32 concurrent clients call classify_image through
the gateway for ~60 s (zero 500s; retries are counted), and a task service that is gone answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture, free_ports
from tests.services.bento.helpers import render_digit

pytestmark = pytest.mark.slow
CLIENTS = 32
SECONDS = float(os.environ.get("MLSTACK_FAULT_TEST_SECONDS", "30"))


def _gateway_over(tmp_path: Path, db_url: str, triton: TritonFixture, bento_port: int):
    return run_gateway(gateway_settings(tmp_path, db_url, triton=triton, bento_host="127.0.0.1", bento_port=bento_port,
                                        gateway_rate_limit_rps=1e6, gateway_rate_limit_burst=1_000_000))


async def _hammer(url: str, token: str, images: list[bytes], seconds: float) -> Counter[int]:
    codes: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits) as c:

        async def client(i: int) -> None:
            n = i
            while time.monotonic() < deadline:
                try:
                    r = await c.post("/api/v1/tasks/classify_image",
                                     files={"image": ("d.png", images[n % len(images)], "image/png")})
                except httpx.TransportError:  # client <-> gateway connection (keep-alive race), not between our tiers
                    codes[0] += 1
                else:
                    codes[r.status_code] += 1
                n += CLIENTS

        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return codes


def test_classify_image_under_concurrency_has_no_500(tmp_path: Path, triton: TritonFixture, bento_triton: BentoFixture) -> None:
    # The transport path does not depend on the database: measured once, on SQLite (no PostgreSQL variant to skip).
    db_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    digits = load_digits()
    images = [render_digit(digits.images[i] / 16.0) for i in range(64)]
    with _gateway_over(tmp_path, db_url, triton, bento_triton.settings.bento_port) as gw:
        token = gw.create_user("fault_user")
        codes = asyncio.run(_hammer(gw.url, token, images, SECONDS))
        from auth_api.proxy.bento import get_client

        retries = get_client(gw.state.extras).retries
    print(f"\nclassify_image x{CLIENTS} for {SECONDS:.0f}s: {dict(codes)}; gateway->bento retries: {retries}")
    assert sum(codes.values()) > 100
    assert codes[500] == 0 and set(codes) <= {0, 200, 503}, codes
    assert codes[503] <= sum(codes.values()) * 0.01, codes
    # A dropped client connection is seen on this box about once per several thousand requests (a pooled keep-alive
    # connection closed by the server as the next request was sent); it is no answer of ours, but it must stay rare.
    assert codes[0] <= max(1, sum(codes.values()) // 1000), codes


def test_task_service_gone_is_503_with_retry_after(tmp_path: Path, db_url: str, triton: TritonFixture) -> None:
    (dead,) = free_ports(1)  # nothing listens: the task service is down or restarting
    digit = render_digit(np.eye(8, dtype=np.float32))
    with _gateway_over(tmp_path, db_url, triton, dead) as gw, gw.client(gw.create_user("gone_user")) as c:
        r = c.post("/api/v1/tasks/classify_image", files={"image": ("d.png", digit, "image/png")})
        assert r.status_code == 503 and r.headers.get("retry-after") == "1", r.text
        assert r.json()["error"]["code"] == "upstream_unavailable"
        from auth_api.proxy.bento import get_client

        assert get_client(gw.state.extras).retries == 1  # sent once more before giving up


def test_wrong_field_through_the_gateway_is_400(tmp_path: Path, db_url: str, triton: TritonFixture,
                                                bento_triton: BentoFixture) -> None:
    digit = render_digit(np.eye(8, dtype=np.float32))
    with _gateway_over(tmp_path, db_url, triton, bento_triton.settings.bento_port) as gw, \
            gw.client(gw.create_user("field_user")) as c:
        r = c.post("/api/v1/tasks/classify_image", files={"file": ("digit.png", digit, "image/png")})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "image", r.text
