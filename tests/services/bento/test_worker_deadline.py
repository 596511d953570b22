"""A task-service call to its tensor worker that never answers is sent once more, then answered 504 — never a hang
until BentoML's 120 s traffic timeout; one that fails in transport is sent once more, then answered 503 with
Retry-After — never a 500."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from services.bento.errors import RunnerTimeout, RunnerUnavailable
from services.bento.http_errors import error_response
from services.bento.service import _retry_async, _retry_sync


def test_a_call_that_never_answers_is_sent_once_more() -> None:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(3600)  # the first call is lost
        return "answer"

    assert asyncio.run(_retry_async(call, 0.2)) == "answer"
    assert len(calls) == 2


def test_two_calls_past_the_deadline_are_a_504_naming_it() -> None:
    async def call() -> str:
        await asyncio.sleep(3600)
        return "never"

    with pytest.raises(RunnerTimeout) as err:
        asyncio.run(_retry_async(call, 0.1))
    assert err.value.status == 504 and err.value.details == {"timeout_s": 0.1, "attempts": 2}


# BentoML 1.4's internal client replaces its session while calls still use it: ~1 classify_image in 1,000 under 32
# clients answered 500 ("Connector is closed", RuntimeError "Connection closed"). Sent once more; gone twice is a 503.
@pytest.mark.parametrize("hiccup", [RuntimeError("Connection closed"), aiohttp.ClientConnectionError("Connector is closed")],
                         ids=["connection-closed", "connector-closed"])
def test_a_transport_hiccup_to_the_worker_is_sent_once_more(hiccup: Exception) -> None:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise hiccup
        return "answer"

    assert asyncio.run(_retry_async(call, 5.0)) == "answer"
    assert len(calls) == 2
    calls.clear()
    assert _retry_sync(lambda: asyncio.run(call())) == "answer" and len(calls) == 2


def test_a_worker_gone_twice_is_a_503_with_retry_after_not_a_500() -> None:
    async def call() -> str:
        raise aiohttp.ClientConnectionError("Connector is closed")

    with pytest.raises(RunnerUnavailable) as err:
        asyncio.run(_retry_async(call, 5.0))
    resp = error_response(err.value)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert json.loads(resp.body)["error"]["code"] == "runner_unavailable"


def test_a_model_error_is_not_sent_twice() -> None:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        raise ValueError("input has the wrong shape")

    with pytest.raises(ValueError):
        asyncio.run(_retry_async(call, 5.0))
    assert len(calls) == 1
