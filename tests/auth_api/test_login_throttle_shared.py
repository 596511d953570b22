"""Login throttling across gateway processes: with ``MLSTACK_REDIS_URL`` the failures counted by one gateway block the
next attempt on another; without Redis (or with Redis down) each gateway still throttles on its own, never a 500."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway
from tests.fixtures.redis import forget
from tests.fixtures.triton import free_ports

REDIS_URL = "redis://127.0.0.1:6379/9"  # a database of its own: other tests' counters never meet these
FAST = {"gateway_login_lockout_base_s": 0.4, "gateway_login_lockout_max_s": 0.8, "gateway_login_failure_window_s": 1.5,
        "gateway_login_ip_max_failures": 1000}


@pytest.fixture
def redis_url() -> Iterator[str]:
    forget(REDIS_URL, "mlstack:lt:*")
    yield REDIS_URL
    forget(REDIS_URL, "mlstack:lt:*")


def _login(c: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/api/v1/auth/login", json={"username": name, "password": password})


@contextlib.contextmanager
def _two_gateways(tmp_path: Path, db_url: str, **settings: Any) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    with run_gateway(gateway_settings(tmp_path / "a", db_url, **FAST, **settings)) as a, \
         run_gateway(gateway_settings(tmp_path / "b", db_url, **FAST, **settings)) as b:
        yield a, b


def test_failures_on_one_gateway_block_the_next_attempt_on_another(tmp_path: Path, db_url: str, redis_url: str) -> None:
    with _two_gateways(tmp_path, db_url, redis_url=redis_url) as (a, b):
        a.create_user("ivy")
        with a.client() as ca, b.client() as cb:
            for name in ("ivy", "no-such-user"):  # the same answers whether or not the account exists
                assert [_login(ca, name, "wrong password!").status_code for _ in range(5)] == [401] * 5
                r = _login(cb, name, "wrong password!")
                assert r.status_code == 429 and r.json()["error"]["code"] == "login_throttled", r.text
                assert int(r.headers["Retry-After"]) >= 1
                if name == "ivy":
                    assert _login(cb, "ivy").status_code == 429  # even the right password waits, on either gateway
            time.sleep(1.6)  # the capped wait (0.8 s) and the quiet window (1.5 s) pass
            assert _login(cb, "ivy").status_code == 200
            # The success on b reset the account's run for a too: four more mistakes there are plain 401s.
            assert [_login(ca, "ivy", "typo typo!").status_code for _ in range(4)] == [401] * 4
            assert _login(ca, "ivy").status_code == 200


def test_redis_down_each_gateway_still_throttles_on_its_own(tmp_path: Path, db_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_ports(1)[0]}/0"
    with _two_gateways(tmp_path, db_url, redis_url=dead) as (a, b):
        a.create_user("ula")
        with a.client() as ca, b.client() as cb:
            assert [_login(ca, "ula", "wrong password!").status_code for _ in range(6)] == [401] * 5 + [429]
            assert _login(cb, "ula").status_code == 200  # b counted nothing: per process while Redis is away
