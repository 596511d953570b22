"""What a Triton 200 without outputs means: a backend error its response cache stored as an empty success.

Triton 2.51 inserts error responses into the response cache (see docs/benchmarks.md and tests/services/triton); a
repeated request then gets ``200 {"outputs": []}``. The gateway never forwards that: when the request holds what the
project's backend refuses (NaN or infinity in a float input) it answers the backend's own 400, else 502.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from auth_api.proxy.tensors import TensorRejected
from mlstack.errors import MlstackError

_FLOATS = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


class EmptyUpstreamAnswer(MlstackError):
    """Triton said 200 but sent no outputs."""

    code = "upstream_empty_answer"
    status = 502


def _not_finite(name: str, arr: np.ndarray) -> TensorRejected | None:
    if np.isnan(arr).any():
        return TensorRejected(f"input '{name}' contains NaN", code="invalid_tensor", details={"input": name})
    if np.isinf(arr).any():
        return TensorRejected(f"input '{name}' contains infinity", code="invalid_tensor", details={"input": name})
    return None


def diagnose(body: bytes, header_length: int | None) -> MlstackError:
    """The error to answer instead of an empty 200 to this (already shape-checked) v2 HTTP request."""
    head = body if header_length is None else body[:header_length]
    try:
        doc: dict[str, Any] = json.loads(head)
        offset = len(head)
        with np.errstate(over="ignore", invalid="ignore"):
            for inp in doc.get("inputs", []):
                dt = _FLOATS.get(inp.get("datatype"))
                size = (inp.get("parameters") or {}).get("binary_data_size")
                arr = None
                if size is not None:
                    if dt is not None:
                        arr = np.frombuffer(body[offset:offset + size], dtype=dt)
                    offset += size
                elif dt is not None and "data" in inp:
                    arr = np.asarray(inp["data"], dtype=np.float64).astype(dt)  # 1e39 is finite in JSON, inf in FP32
                if arr is not None and (err := _not_finite(str(inp.get("name")), arr)) is not None:
                    return err
    except (ValueError, TypeError):
        pass
    return EmptyUpstreamAnswer("the inference server answered without outputs (its response cache returned a stored error)")
