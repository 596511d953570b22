"""What every scenario shares: the model under test (``MLSTACK_BENCH_MODEL``), a valid single row, response checks."""

from __future__ import annotations

import json
import os
import random
from typing import Any

MODEL = os.environ.get("MLSTACK_BENCH_MODEL", "iris-logreg")
ROW_WIDTH = int(os.environ.get("MLSTACK_BENCH_ROW_WIDTH", "4"))
BATCH = int(os.environ.get("MLSTACK_BENCH_BATCH", "1"))  # rows per request (1 = the single-row case)
# A fixed pool of distinct rows: realistic repeats (some response-cache hits) without one constant body.
_rng = random.Random(0)
ROWS = [[round(_rng.uniform(0.1, 8.0), 2) for _ in range(ROW_WIDTH)] for _ in range(256)]


def v2_body(row: list[float], batch: int | None = None) -> str:
    """A KServe v2 JSON request: ``row`` repeated ``batch`` times (default ``MLSTACK_BENCH_BATCH``) as the model's ``input``."""
    n = BATCH if batch is None else batch
    return json.dumps({"inputs": [{"name": "input", "shape": [n, len(row)], "datatype": "FP32", "data": row * n}]})


def random_row() -> list[float]:
    return random.choice(ROWS)


def v2_problem(body: Any, batch: int | None = None) -> str | None:
    """Why a v2 infer response body is wrong for a request of ``batch`` rows (default ``BATCH``), or None when valid."""
    n = BATCH if batch is None else batch
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list) or not body["outputs"]:
        return f"no outputs in response: {str(body)[:200]}"
    for out in body["outputs"]:
        if not out.get("data") or out.get("shape", [0])[0] != n:
            return f"output {out.get('name')} has shape {out.get('shape')}, expected {n} row(s)"
    return None


def predict_problem(body: Any) -> str | None:
    """Why an ``/api/v1/predict`` response for one instance is wrong, or None."""
    if not isinstance(body, dict):
        return f"not a JSON object: {str(body)[:200]}"
    results = body.get("predictions", body.get("results"))
    if not isinstance(results, list) or len(results) != 1:
        return f"expected one prediction, got: {str(body)[:200]}"
    return None
