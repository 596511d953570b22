"""Background runs of the app (analyses, twin simulations) as asyncio tasks of the gateway process; their state is in
the database (``status``: pending -> running -> done | failed), so any gateway worker answers a status poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from auth_api.state import Gateway
from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)
EXTRAS_KEY = "battery_jobs"


def spawn(gw: Gateway, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Start ``work`` now; a reference is held until it ends (asyncio keeps only weak ones)."""
    tasks: set[asyncio.Task[None]] = gw.extras.setdefault(EXTRAS_KEY, set())
    task = asyncio.get_running_loop().create_task(work(), name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def error_body(exc: BaseException) -> dict[str, Any]:
    """What a failed run stores: the domain error's code and message, never a stack trace."""
    if isinstance(exc, MlstackError):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    logger.error("battery job failed", exc_info=exc)
    return {"code": "internal_error", "message": "the run failed unexpectedly", "details": {}}
