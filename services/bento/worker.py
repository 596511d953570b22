"""TensorWorker: the BentoML service that owns the runner and batches tensor work across concurrent requests.

It runs as its own worker process (a dependency of the task service, ``bentoml.depends``), so BentoML's
adaptive batcher can merge rows from many concurrent ``classify_image`` / ``predict_records`` calls into one
runner call per model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import bentoml
import numpy as np

from mlstack.errors import MlstackError
from mlstack.settings import get_settings
from services.bento.runners import make_runner

logger = logging.getLogger(__name__)

# Adaptive batching of rows:
# - max_batch_size=64 matches the max_batch_size every published model gets in config.pbtxt
#   (settings.default_max_batch_size), so one merged batch is exactly one Triton request (no re-splitting).
# - max_latency_ms is BentoML's *deadline*, not its wait: the batcher's wait adapts to the measured cost of a
#   batch (a few ms here); requests whose estimated queueing time would exceed the deadline are refused with
#   503. Tensor calls take ~1 ms, so 5 s is only reached under overload, where a 503 is the honest answer;
#   a tight value (e.g. 50 ms) sheds load already at moderate concurrency on 2 cores.
ROW_BATCH_SIZE = 64
ROW_MAX_LATENCY_MS = 5_000


def _error(exc: MlstackError) -> dict[str, Any]:
    return {"error": exc.to_body()["error"], "status": exc.status}


@bentoml.service(name="mlstack-tensors", workers=1, traffic={"timeout": 120})
class TensorWorker:
    """Runs tensors through the runner chosen by ``MLSTACK_BENTO_RUNNER`` (triton or local)."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.runner = make_runner(self.settings)
        logger.info("tensor worker: %s runner, repository %s", self.settings.bento_runner, self.settings.repository)

    async def _group(self, model: str, version: int | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        inputs = {k: np.stack([np.asarray(r["inputs"][k]) for r in rows]) for k in rows[0]["inputs"]}
        try:
            outs = await self.runner.infer(model, inputs, version)
        except MlstackError as exc:
            return [_error(exc)] * len(rows)
        return [{"outputs": {k: v[j] for k, v in outs.items()}} for j in range(len(rows))]

    @bentoml.api(batchable=True, max_batch_size=ROW_BATCH_SIZE, max_latency_ms=ROW_MAX_LATENCY_MS)
    async def infer_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One sample per row ``{model, version, inputs}``; rows of one model (and version) go in one runner call.

        An error answers only the rows of its model, never the whole merged batch.
        """
        groups: dict[tuple[str, int | None], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault((row["model"], row.get("version")), []).append(i)
        done = await asyncio.gather(*(self._group(m, v, [rows[i] for i in idx]) for (m, v), idx in groups.items()))
        results: list[dict[str, Any]] = [{}] * len(rows)
        for idx, res in zip(groups.values(), done, strict=True):
            for i, r in zip(idx, res, strict=True):
                results[i] = r
        return results

    @bentoml.api
    async def infer(self, model: str, inputs: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        """A whole batch in one call (explanations send thousands of rows; the runner splits them for Triton)."""
        try:
            outs = await self.runner.infer(model, {k: np.asarray(v) for k, v in inputs.items()}, version)
        except MlstackError as exc:
            return _error(exc)
        return {"outputs": outs}

    @bentoml.api
    async def ready(self) -> dict[str, Any]:
        return {"runner": self.settings.bento_runner, "ready": await self.runner.ready()}
