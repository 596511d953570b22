"""A task-service call to its tensor worker that never answers is sent once more, then answered 504 — never a hang
until BentoML's 120 s traffic timeout."""

from __future__ import annotations

import asyncio

import pytest

from services.bento.errors import RunnerTimeout
from services.bento.service import _retry_async


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
