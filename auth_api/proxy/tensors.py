"""Bounds every inference request against the model's config.pbtxt before it reaches Triton.

Triton allocates what a request's ``shape`` declares before it looks at the data (a 100-byte JSON body declaring
1e9 rows cost it 20 GB), so the gateway checks, per input: name known and every required input present, datatype,
rank and dims (``-1`` only where the config has it), batch ≤ ``max_batch_size``, a cap on the elements of the whole
request, and that the elements declared equal the elements sent (JSON values, binary bytes / dtype size, BYTES
length prefixes). Transports (HTTP JSON and binary, gRPC, REST predict) only extract (name, datatype, shape, sent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from mlstack.errors import MlstackError
from mlstack.repository.config import ModelConfigT, dtype_name

# Bytes per element; BYTES (Triton's TYPE_STRING) is variable-length: 4-byte little-endian length + payload each.
ITEMSIZE: dict[str, int] = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
                            "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8}
_decode = json.JSONDecoder().decode


class TensorRejected(MlstackError):
    """A request whose tensors do not fit the model's config; never forwarded."""

    code = "invalid_tensor"
    status = 400


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str  # KServe v2 name: FP32, BYTES, ...
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size
    optional: bool
    ragged: bool
    shape: list[int]  # what a request's shape must match: -1 (the batch, when batching) followed by dims


@dataclass(frozen=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: dict[str, InputSpec]
    required: tuple[str, ...]


def spec_from_config(cfg: ModelConfigT, name: str | None = None) -> ModelSpec:
    """The inputs of a parsed config.pbtxt (``name``: the model's folder, for configs that leave the name out)."""
    inputs = {}
    batch = [-1] if cfg.max_batch_size > 0 else []
    for t in cfg.input:
        dt = dtype_name(t.data_type)
        dims = tuple(int(d) for d in t.dims)
        inputs[t.name] = InputSpec(t.name, "BYTES" if dt == "STRING" else dt, dims, bool(t.optional),
                                   bool(t.allow_ragged_batch), batch + list(dims))
    return ModelSpec(name or cfg.name, int(cfg.max_batch_size), inputs, tuple(n for n, s in inputs.items() if not s.optional))


@dataclass
class Sent:
    """One input as a request states it: ``elements`` is what its data holds (None: not countable, e.g. BYTES in shm)."""

    name: str
    datatype: str
    shape: list[int]
    elements: int | None


def _reject(code: str, message: str, **details: Any) -> TensorRejected:
    return TensorRejected(message, code=code, details=details)


def check(spec: ModelSpec, sent: Iterable[Sent], max_elements: int) -> int:
    """Raise TensorRejected unless every input fits ``spec``; the request's total element count otherwise."""
    seen: set[str] = set()
    total = 0
    for s in sent:
        want = spec.inputs.get(s.name)
        if want is None:
            raise _reject("unknown_input", f"input '{s.name[:64]}' is not an input of model '{spec.name}' "
                                           f"(inputs: {', '.join(spec.inputs)})", input=s.name[:64], expected=list(spec.inputs))
        if s.name in seen:
            raise _reject("duplicate_input", f"input '{s.name}' is given more than once", input=s.name)
        seen.add(s.name)
        n = _check_one(spec, want, s)
        total += n
        if total > max_elements:
            raise _reject("too_many_elements", f"input '{s.name}': the request declares {total} elements, more than the "
                                               f"limit of {max_elements}", input=s.name, limit=max_elements)
        if s.elements is not None and s.elements != n:
            raise _reject("element_count_mismatch", f"input '{s.name}' declares shape {s.shape} ({n} elements) but sends "
                                                    f"{s.elements}", input=s.name, declared=n, sent=s.elements)
    missing = [n for n in spec.required if n not in seen]
    if missing:
        raise _reject("missing_input", f"input '{missing[0]}' is required by model '{spec.name}' but missing",
                      input=missing[0], missing=missing)
    return total


def _check_one(spec: ModelSpec, want: InputSpec, s: Sent) -> int:
    name = s.name
    if s.datatype != want.datatype:
        raise _reject("datatype_mismatch", f"input '{name}' has datatype '{s.datatype[:16]}', the model expects "
                                           f"'{want.datatype}'", input=name, got=s.datatype[:16], expected=want.datatype)
    shape = s.shape
    if shape and min(shape) < 0:
        raise _reject("invalid_shape", f"input '{name}' has a negative dimension in shape {shape}", input=name, got=shape)
    if not want.ragged:
        expected = want.shape
        if len(shape) != len(expected):
            raise _reject("rank_mismatch", f"input '{name}' has shape {shape} (rank {len(shape)}), the model expects rank "
                                           f"{len(expected)} {expected}", input=name, got=shape, expected=expected)
        for got, w in zip(shape, expected, strict=True):
            if got != w and w != -1:
                raise _reject("shape_mismatch", f"input '{name}' has shape {shape}, the model expects {expected}",
                              input=name, got=shape, expected=expected)
        mbs = spec.max_batch_size
        if mbs > 0 and not 1 <= shape[0] <= mbs:
            raise _reject("batch_too_large" if shape[0] > mbs else "empty_batch",
                          f"input '{name}' has a batch of {shape[0]}; model '{spec.name}' takes 1 to {mbs}",
                          input=name, batch=shape[0], max_batch_size=mbs)
    return math.prod(shape)


def _shape(inp: dict[str, Any], i: int) -> list[int]:
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _reject("invalid_shape", f"input {i} ('{str(inp.get('name'))[:64]}'): 'shape' must be a list of "
                                       "non-negative integers", input=str(inp.get("name"))[:64])
    return shape


def _leaves(data: Any) -> int:
    """Values in JSON ``data``, flat or nested (Triton itself checks that nesting matches the shape)."""
    if type(data) is not list:
        return 1
    if not data or type(data[0]) is not list:
        return len(data)
    return sum(_leaves(d) for d in data)


def bytes_elements(buf: bytes | memoryview, name: str) -> int:
    """Elements of a serialized BYTES tensor; TensorRejected if the length prefixes disagree with the byte count."""
    mv = memoryview(buf)
    size, pos, n = len(mv), 0, 0
    while pos < size:
        if pos + 4 > size:
            raise _reject("invalid_bytes_tensor", f"input '{name}': BYTES data ends inside a 4-byte length prefix", input=name)
        pos += 4 + int.from_bytes(mv[pos:pos + 4], "little")
        n += 1
    if pos != size:
        raise _reject("invalid_bytes_tensor", f"input '{name}': BYTES length prefixes claim {pos} bytes, {size} were sent",
                      input=name, claimed=pos, sent=size)
    return n


def binary_elements(datatype: str, chunk: bytes | memoryview, name: str) -> int | None:
    """Elements in a binary tensor's bytes (None for a datatype this module does not know: check() refuses it)."""
    item = ITEMSIZE.get(datatype)
    if datatype == "BYTES":
        return bytes_elements(chunk, name)
    if item is None:
        return None
    if len(chunk) % item:
        raise _reject("element_count_mismatch", f"input '{name}': {len(chunk)} bytes of data is not a whole number of "
                                                f"{datatype} values", input=name, bytes=len(chunk))
    return len(chunk) // item


def shm_elements(size: Any, datatype: str, name: str) -> int | None:
    """Elements in ``size`` bytes of shared memory (None for BYTES: Triton checks those against the region)."""
    if type(size) is not int or size < 0:
        raise _reject("invalid_request", f"input '{name}': shared memory input without a valid 'shared_memory_byte_size'",
                      input=name)
    item = ITEMSIZE.get(datatype)
    if item is None:
        return None
    if size % item:
        raise _reject("element_count_mismatch", f"input '{name}': {size} bytes of shared memory is not a whole number "
                                                f"of {datatype} values", input=name)
    return size // item


def check_http(spec: ModelSpec, body: bytes, header_length: int | None, max_elements: int) -> None:
    """A KServe v2 HTTP infer body, JSON or with the binary-tensor extension (``Inference-Header-Content-Length``)."""
    if header_length is not None and header_length > len(body):
        raise _reject("invalid_request", f"Inference-Header-Content-Length {header_length} exceeds the body's "
                                         f"{len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError:  # NaN/Infinity (which json takes and Triton refuses per value), or not JSON at all
        try:
            doc = _decode(head.decode())  # json.loads(bytes) would sniff the encoding first; v2 bodies are UTF-8
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
            raise _reject("invalid_request", f"failed to parse the request JSON: {str(exc)[:200]}") from exc
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list):
        raise _reject("invalid_request", "the request JSON needs an 'inputs' list")
    offset = len(head)
    sent = []
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str) or not isinstance(inp.get("datatype"), str):
            raise _reject("invalid_request", f"input {i} needs a string 'name' and 'datatype'")
        name, datatype, shape = inp["name"], inp["datatype"], _shape(inp, i)
        params = inp.get("parameters") or {}
        if not isinstance(params, dict):
            raise _reject("invalid_request", f"input '{name[:64]}': 'parameters' must be an object", input=name[:64])
        bsize = params.get("binary_data_size")
        if bsize is not None:
            if type(bsize) is not int or bsize < 0 or offset + bsize > len(body):
                raise _reject("invalid_request", f"input '{name[:64]}': binary_data_size {bsize!r} does not fit the "
                                                 f"{len(body) - offset} bytes left in the body", input=name[:64])
            elements = binary_elements(datatype, memoryview(body)[offset:offset + bsize], name[:64])
            offset += bsize
        elif "shared_memory_region" in params:
            elements = shm_elements(params.get("shared_memory_byte_size"), datatype, name[:64])
        elif "data" in inp:
            elements = _leaves(inp["data"])
        else:
            raise _reject("invalid_request", f"input '{name[:64]}' has no 'data', binary data or shared memory",
                          input=name[:64])
        sent.append(Sent(name, datatype, shape, elements))
    if offset != len(body):
        raise _reject("invalid_request", f"{len(body) - offset} bytes after the inputs' data belong to no input "
                                         "(binary_data_size and Inference-Header-Content-Length disagree with the body)")
    check(spec, sent, max_elements)
