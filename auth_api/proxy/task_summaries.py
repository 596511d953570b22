"""History summaries of task-service calls (``/api/v1/tasks/{task}``); they run in the history ingester.

Images are summarised as content type (``input_dtype``), byte count (``input_shape`` = ``[bytes]``) and sha256 of the
uploaded file; records as ``[rows, features]``; outputs as the first result's label + probability or value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

Record = dict[str, Any]
Finisher = Callable[[Record], Record]


def task_finisher(task: str, body: bytes, ctype: str, doc: Any) -> Finisher:
    """A history finisher for a successful task call: ``body``/``ctype`` as sent, ``doc`` the parsed answer."""
    def finish(rec: Record) -> Record:
        rec.update(_input_summary(task, body, ctype))
        if isinstance(doc, dict):
            rec.update(_output_summary(task, doc))
        return rec

    return finish


def task_failure_finisher(body: bytes, ctype: str) -> Finisher:
    """A history finisher for a failed task call: the model the body asked for, when it names one (no outputs)."""
    def finish(rec: Record) -> Record:
        model: Any = None
        if ctype.startswith("multipart/"):
            part = _multipart_field(body, ctype, "model")
            model = part[1].decode("utf-8", "replace") if part is not None else None
        else:
            try:
                req = json.loads(body)
            except ValueError:
                req = None
            model = req.get("model") if isinstance(req, dict) else None
        if isinstance(model, str) and model:
            rec["model"] = model[:64]
        return rec

    return finish


def _input_summary(task: str, body: bytes, ctype: str) -> dict[str, Any]:
    if task == "classify_image":
        part = _multipart_field(body, ctype, "image")
        if part is not None:
            part_type, data = part
            return {"input_dtype": (part_type or "unknown")[:16], "input_shape": json.dumps([len(data)]),
                    "input_sha256": hashlib.sha256(data).hexdigest()}
        return {"input_sha256": hashlib.sha256(body).hexdigest()}
    out: dict[str, Any] = {"input_dtype": "json", "input_sha256": hashlib.sha256(body).hexdigest()}
    req = json.loads(body)
    records = req.get("records") if isinstance(req, dict) else None
    if isinstance(records, list):
        width = len(records[0]) if records and isinstance(records[0], dict) else 0
        out.update(input_dtype="records", input_shape=json.dumps([len(records), width]))
    return out


def _output_summary(task: str, doc: dict[str, Any]) -> dict[str, Any]:
    if task == "classify_image":
        preds = doc.get("predictions") or []
        return {"output_label": str(preds[0]["label"])[:128], "output_confidence": float(preds[0]["probability"])} if preds else {}
    if task == "predict_records":
        results = doc.get("results") or []
        return _result_summary(results[0]) if results else {}
    if task == "explain":
        rows = doc.get("explanations") or []
        return _result_summary(rows[0].get("prediction") or {}) if rows else {}
    scores = doc.get("scores") or {}
    out = _result_summary(scores.get("battery-fault") or {})
    anomaly = scores.get("battery-anomaly") or {}
    if isinstance(anomaly.get("score"), int | float):
        out["output_value"] = float(anomaly["score"])
    return out


def _result_summary(result: dict[str, Any]) -> dict[str, Any]:
    """One task-service result: class (+ its probability), regression value, or anomaly label (+ score)."""
    out: dict[str, Any] = {}
    if "label" in result:
        out["output_label"] = str(result["label"])[:128]
        probs = result.get("probabilities")
        if isinstance(probs, dict) and isinstance(probs.get(result["label"]), int | float):
            out["output_confidence"] = float(probs[result["label"]])
    for key in ("value", "score"):
        if isinstance(result.get(key), int | float):
            out["output_value"] = float(result[key])
    return out


def _multipart_field(body: bytes, ctype: str, name: str) -> tuple[str | None, bytes] | None:
    """``(content type, bytes)`` of the form field ``name`` in a multipart body, or None."""
    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        return None
    found: dict[str, tuple[str | None, bytes]] = {}
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()
    chunks: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        chunks.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_part_end() -> None:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        part_name = disp.get(b"name", b"").decode("utf-8", "replace")
        if part_name not in found:
            ct = headers.get(b"content-type")
            found[part_name] = (ct.decode("latin-1") if ct else None, b"".join(chunks))

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    return found.get(name)
