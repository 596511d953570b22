"""What a Triton 200 without outputs means: a backend error its response cache stored as an empty success.

Triton 2.51 inserts error responses into the response cache (see docs/benchmarks.md and tests/services/triton); a
repeated request then gets ``200 {"outputs": []}`` (over gRPC: OK with no outputs). The gateway never forwards that: when
the request holds what the project's backend refuses (NaN or infinity in a float input) it answers the backend's own
400 (gRPC INVALID_ARGUMENT), else 502 (gRPC INTERNAL). ``/api/v1/predict`` and the gRPC paths use the same diagnosis.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

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


def _empty() -> EmptyUpstreamAnswer:
    return EmptyUpstreamAnswer("the inference server answered without outputs (its response cache returned a stored error)")


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
    return _empty()


_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def diagnose_grpc(request: bytes) -> MlstackError:
    """The same, for an OK without outputs to this (already checked) serialized gRPC ``ModelInferRequest``."""
    try:
        req = service_pb2.ModelInferRequest.FromString(request)
    except DecodeError:
        return _empty()
    raws = iter(req.raw_input_contents)
    with np.errstate(over="ignore", invalid="ignore"):
        for inp in req.inputs:
            dt = _FLOATS.get(inp.datatype)
            if "shared_memory_region" in inp.parameters:
                continue  # not in the message: nothing to look at
            if inp.HasField("contents"):
                field = _CONTENTS.get(inp.datatype)
                arr = np.asarray(getattr(inp.contents, field), dtype=dt) if field and dt is not None else None
            else:
                raw = next(raws, b"")  # raw contents belong, in order, to the inputs with no other data
                arr = np.frombuffer(raw, dtype=dt) if dt is not None and len(raw) % np.dtype(dt).itemsize == 0 else None
            if arr is not None and (err := _not_finite(inp.name[:64], arr)) is not None:
                return err
    return _empty()
