"""One predict frame -> one answer: images decoded off the loop by the shared preprocessing, tensors sent to Triton.

Frames reuse the REST predict route's inference (``_infer``: card of the served version, tensor bounds, version pinning)
so a WebSocket prediction is computed exactly like ``POST /api/v1/predict/{name}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from auth_api.api.routes.predict import SWAP_RETRIES, PredictRequest, _infer, _rows, _upstream_error
from auth_api.core.errors import InvalidInput
from auth_api.proxy.summaries import NP
from auth_api.proxy.tensors import check_http
from auth_api.state import Gateway
from mlstack import imaging
from mlstack.errors import ModelNotFound
from mlstack.repository.card import ModelCard

POOL_KEY = "ws_decode_pool"


@dataclass
class Frame:
    """A predict request as received: exactly one of ``image`` (raw bytes or base64 text), ``records``, ``inputs``."""

    model: str
    received: float
    request_id: Any = None
    image: bytes | str | None = None
    records: Any = None
    inputs: Any = None
    version: int | None = None
    top_k: int = 3
    size: int = 0


@dataclass
class Answer:
    body: dict[str, Any]
    version: str | None
    upstream_s: float
    tensor: np.ndarray
    dtype: str
    outputs: dict[str, np.ndarray | None]
    card: ModelCard
    raw_image: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decode_pool(gw: Gateway) -> ThreadPoolExecutor:
    """The gateway's bounded pool of decoding threads (shared by every connection, created on first use)."""
    pool = gw.extras.get(POOL_KEY)
    if pool is None:
        pool = gw.extras[POOL_KEY] = ThreadPoolExecutor(gw.settings.gateway_ws_decode_workers, thread_name_prefix="ws-decode")
    return pool  # type: ignore[no-any-return]


def _preprocess(image: bytes | str, card: ModelCard, max_bytes: int, max_pixels: int, max_decode: int) -> tuple[np.ndarray, bytes]:
    raw = image if isinstance(image, bytes) else _b64(image)
    spec = imaging.image_spec(card)
    img = imaging.decode(raw, max_bytes=max_bytes, max_pixels=max_pixels, max_decode_pixels=max_decode)
    return imaging.to_tensor(imaging.normalise(img, spec), card)[None], raw


def _b64(text: str) -> bytes:
    if text.startswith("data:"):  # a browser's canvas.toDataURL() result
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("'image' is not valid base64", code="invalid_base64") from exc


async def run(gw: Gateway, frame: Frame) -> Answer:
    """Predict one frame; domain errors (bad image, unknown model, Triton refusal) propagate to the caller."""
    if frame.inputs is not None:
        return await _v2(gw, frame)
    raw = None
    if frame.image is not None:
        s = gw.settings
        version = frame.version or await gw.catalog.served_version(frame.model, gw.upstream)
        card = gw.catalog.card(frame.model, version)
        tensor, raw = await asyncio.get_running_loop().run_in_executor(
            decode_pool(gw), _preprocess, frame.image, card, s.gateway_ws_max_message_bytes, s.bento_max_image_pixels,
            s.bento_max_decode_pixels)
        body = PredictRequest.model_construct(instances=tensor.tolist(), records=None, version=frame.version)
    else:
        try:
            body = PredictRequest.model_validate({"records": frame.records, "version": frame.version})
        except ValidationError as exc:
            raise InvalidInput("'records' must be a non-empty list of objects of numbers", code="invalid_records",
                               details={"errors": [e["msg"] for e in exc.errors()[:5]]}) from exc
    for attempt in range(SWAP_RETRIES + 1):
        card, version, out, upstream_s = await _infer(frame.model, body, gw, pin=attempt < SWAP_RETRIES)
        if out is not None or frame.version:
            break
        gw.catalog.invalidate(frame.model)
        await asyncio.sleep(0.02 * (attempt + 1))
    if out is None:
        raise ModelNotFound(frame.model, version)
    arr, dtype, outputs, answered = out
    body_out = _shape(frame, card, _rows(card, outputs))
    return Answer(body_out, answered, upstream_s, arr, dtype, outputs, card, raw)


async def _v2(gw: Gateway, frame: Frame) -> Answer:
    """``inputs`` as KServe v2 JSON tensors, bounded like the v2 route, forwarded unversioned (Triton picks the version)."""
    if not isinstance(frame.inputs, list) or not frame.inputs:
        raise InvalidInput("'inputs' must be a non-empty list of v2 tensors", code="invalid_inputs")
    payload = json.dumps({"inputs": frame.inputs}).encode()
    check_http(gw.catalog.spec(frame.model), payload, None, gw.settings.gateway_max_tensor_elements)
    up = await gw.upstream.request("POST", f"/v2/models/{frame.model}/infer", payload, {"content-type": "application/json"})
    doc = json.loads(up.content) if up.content else {}
    if up.status != 200:
        raise _upstream_error(up.status, str(doc.get("error") if isinstance(doc, dict) else "inference failed"), frame.model, None)
    outputs: dict[str, np.ndarray | None] = {
        o["name"]: np.asarray(o["data"], dtype=NP.get(o["datatype"], np.float32)).reshape(o["shape"])
        for o in doc.get("outputs", []) if o.get("datatype") in NP}
    answered = str(doc.get("model_version") or "") or None
    card = gw.catalog.card(frame.model, int(answered) if answered and answered.isdigit() else None)
    first = frame.inputs[0] if isinstance(frame.inputs[0], dict) else {}
    arr = np.asarray(first.get("data", []))
    return Answer(_shape(frame, card, _rows(card, outputs)), answered, up.elapsed_s, arr, str(first.get("datatype", "")),
                  outputs, card)


def _result(row: dict[str, Any], top_k: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: _finite(row[k]) for k in ("label", "confidence", "value", "score", "anomaly") if k in row}
    probs = row.get("probabilities")
    if isinstance(probs, dict):
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:top_k]
    elif isinstance(probs, list):
        ranked = sorted(((str(i), p) for i, p in enumerate(probs)), key=lambda kv: -kv[1])[:top_k]
    else:
        return out
    out["predictions"] = [{"label": lab, "probability": _finite(p)} for lab, p in ranked]
    return out


def _shape(frame: Frame, card: ModelCard, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Image frames answer one sample at the top level; records and tensors one result per row (and the first on top)."""
    results = [_result(r, frame.top_k) for r in rows]
    body: dict[str, Any] = dict(results[0]) if results and (frame.image is not None or len(results) == 1) else {}
    if frame.image is None:
        body["results"] = results
    body["task"] = card.task
    return body


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def elapsed_ms(frame: Frame) -> float:
    return round((time.perf_counter() - frame.received) * 1000.0, 2)
