"""History summaries of KServe v2 requests/responses (JSON, binary-tensor extension, gRPC protobuf).

These run in the history ingester (``auth_api.ingester``), never on the request path.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

NP = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "INT16": np.int16,
      "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
LabelLookup = Callable[[str, str | None], list[str] | None]


def _split(body: bytes, header_len: int | None) -> tuple[dict[str, Any], bytes]:
    head, rest = (body[:header_len], body[header_len:]) if header_len is not None else (body, b"")
    return _loads(head), rest


def _loads(doc: bytes) -> Any:
    # orjson: the JSON parse was a third of a summary's CPU with the standard library's. It refuses what Python's json
    # takes (NaN, Infinity), which a client may send: those documents go the standard library's way.
    try:
        return orjson.loads(doc)
    except orjson.JSONDecodeError:
        return json.loads(doc)


def shape_text(shape: Any) -> str:
    """A shape as the history column stores it (``json.dumps`` of the list: "[1, 4]"), without the encoder for ints."""
    if isinstance(shape, list) and all(type(d) is int for d in shape):
        return "[" + ", ".join(map(str, shape)) + "]"
    return json.dumps(shape)


def _tensors(doc: dict[str, Any], binary: bytes, key: str) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {}
    offset = 0
    for t in doc.get(key, []):
        name, dt, shape = t.get("name"), t.get("datatype"), t.get("shape", [])
        size = (t.get("parameters") or {}).get("binary_data_size")
        arr = None
        if size is not None:
            chunk = binary[offset:offset + int(size)]
            offset += int(size)
            if dt in NP:
                arr = np.frombuffer(chunk, dtype=NP[dt]).reshape(shape)
        elif "data" in t and dt in NP:
            arr = np.asarray(t["data"], dtype=NP[dt]).reshape(shape)
        out[str(name)] = arr
    return out


def summarize_outputs(outputs: dict[str, np.ndarray | None], labels: list[str] | None) -> dict[str, Any]:
    """label / confidence / value of the first row, by the project's output naming convention."""
    row: dict[str, Any] = {}
    probs = outputs.get("probabilities")
    if probs is not None and probs.size:
        p = probs.reshape(probs.shape[0], -1)[0] if probs.ndim > 1 else probs
        idx = int(p.argmax())
        row["output_confidence"] = float(p[idx])
        row["output_label"] = labels[idx] if labels and idx < len(labels) else str(idx)
    lab = outputs.get("label")
    if lab is not None and lab.size and "output_label" not in row:
        v = lab.reshape(-1)[0]
        row["output_label"] = labels[int(v)] if labels and 0 <= int(v) < len(labels) else str(v.item())
    for name in ("value", "scores"):
        val = outputs.get(name)
        if val is not None and val.size:
            row["output_value"] = float(val.reshape(-1)[0])
            break
    return row


def http_finisher(req_body: bytes, req_hlen: int | None, resp_body: bytes, resp_hlen: int | None,
                  labels: LabelLookup, req_encoding: str | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A history finisher for a v2 HTTP infer call."""

    def finish(rec: dict[str, Any]) -> dict[str, Any]:
        rec["input_sha256"] = hashlib.sha256(req_body).hexdigest()
        body = req_body
        if req_encoding == "gzip":
            body = gzip.decompress(req_body)
        elif req_encoding == "deflate":
            body = zlib.decompress(req_body)
        doc, _ = _split(body, req_hlen)
        inputs = doc.get("inputs") or []
        if inputs:
            rec["input_shape"] = shape_text(inputs[0].get("shape"))[:128]
            rec["input_dtype"] = str(inputs[0].get("datatype"))[:16]
        if rec.get("status") == 200 and resp_body:
            rdoc, rbin = _split(resp_body, resp_hlen)
            rec["version"] = rec.get("version") or rdoc.get("model_version")
            rec.update(summarize_outputs(_tensors(rdoc, rbin, "outputs"), labels(rec["model"], rec.get("version"))))
        return rec

    return finish


def grpc_finisher(req: bytes, resp: bytes | None, labels: LabelLookup,
                  streamed: bool = False) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A history finisher for a gRPC ModelInfer call (raw protobuf bytes), or one answer of ModelStreamInfer (``streamed``:
    ``resp`` is a ModelStreamInferResponse)."""

    def finish(rec: dict[str, Any]) -> dict[str, Any]:
        from tritonclient.grpc import service_pb2

        rec["input_sha256"] = hashlib.sha256(req).hexdigest()
        r = service_pb2.ModelInferRequest.FromString(req)
        rec["model"] = r.model_name[:64]
        rec["version"] = r.model_version or None
        if r.inputs:
            rec["input_shape"] = shape_text(list(r.inputs[0].shape))
            rec["input_dtype"] = r.inputs[0].datatype[:16]
        if resp is not None:
            out = (service_pb2.ModelStreamInferResponse.FromString(resp).infer_response if streamed
                   else service_pb2.ModelInferResponse.FromString(resp))
            rec["version"] = rec["version"] or out.model_version or None
            tensors: dict[str, np.ndarray | None] = {}
            for i, t in enumerate(out.outputs):
                raw = out.raw_output_contents[i] if i < len(out.raw_output_contents) else None
                tensors[t.name] = (np.frombuffer(raw, dtype=NP[t.datatype]).reshape(list(t.shape))
                                   if raw is not None and t.datatype in NP else None)
            rec.update(summarize_outputs(tensors, labels(rec["model"], rec.get("version"))))
        return rec

    return finish
