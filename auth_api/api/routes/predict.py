"""``POST /api/v1/predict/{name}``: JSON instances or feature-keyed records in, labels / probabilities / values out."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from auth_api.core.errors import InvalidInput
from auth_api.deps import GatewayDep, InferencePrincipal
from auth_api.jobs.ownership import ensure_visible
from auth_api.journal import new_prediction_id
from auth_api.proxy.empty_answer import diagnose
from auth_api.proxy.keep import keep_of
from auth_api.proxy.records import HEADER, base_record, failure_record, journal
from auth_api.proxy.summaries import NP, summarize_outputs
from auth_api.proxy.tensors import Sent, check
from auth_api.state import Gateway
from mlstack.errors import MlstackError, ModelNotFound
from mlstack.repository.card import ModelCard
from mlstack.repository.layout import NAME_RE

# Tries pinned to the version Triton says it serves before one unpinned try (see predict()).
SWAP_RETRIES = 2
router = APIRouter(prefix="/predict", tags=["predict"])


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [  # a misspelt "versoin" is a 422 naming it
        {"instances": [[5.1, 3.5, 1.4, 0.2]]},
        {"records": [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}]},
    ]})
    instances: list[Any] | None = Field(None, description="Rows of numbers (or nested lists for images).", max_length=10_000)
    records: list[dict[str, float | str]] | None = Field(
        None, description="Rows keyed by the model card's feature names (text only for a card's categorical features).",
        max_length=10_000)
    version: int | None = Field(None, ge=1, description="Pin a version (default: the live one).")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data: Any) -> Any:
        # JSON true/false would become 1.0/0.0; BentoML's predict_records refuses them, so does this route (one rule).
        # Raised as a domain error (not ValueError) so the 422 names the field in its message.
        if isinstance(data, dict):
            where = _first_boolean(data.get("records"), "records") or _first_boolean(data.get("instances"), "instances")
            if where:
                raise InvalidInput(f"{where} is a boolean; features must be numbers", code="boolean_not_allowed",
                                   details={"field": where})
        return data

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.instances is None) == (self.records is None):
            raise ValueError("send exactly one of 'instances' or 'records'")
        if not (self.instances or self.records):
            raise ValueError("no rows to predict")
        return self


def _first_boolean(value: Any, path: str) -> str | None:
    """The path of the first JSON boolean in ``value`` (nested lists and records), else None."""
    if type(value) is bool:
        return path
    items: Any = enumerate(value) if type(value) is list else value.items() if type(value) is dict else ()
    for k, v in items:
        t = type(v)
        # Paths are built only on the way to a boolean or a container: a numeric leaf costs one type() call.
        if (t is bool or t is list or t is dict) and (found := _first_boolean(v, f"{path}[{k}]" if type(k) is int else f"{path}.{k}")):
            return found
    return None


class PredictResponse(BaseModel):
    prediction_id: str = Field(description="This prediction's id: GET /api/v1/history/{prediction_id}, feedback on it.")
    model: str
    version: str | None
    task: str
    predictions: list[dict[str, Any]]


def _tensor(body: PredictRequest, card: ModelCard) -> tuple[np.ndarray, str, str]:
    spec = card.inputs[0] if card.inputs else None
    name, dtype = (spec.name, spec.datatype) if spec else ("input", "FP32")
    if body.records is not None:
        if not card.feature_names:
            raise InvalidInput(f"model '{card.name}' has no feature names; send 'instances'", code="no_feature_names")
        missing = sorted({f for r in body.records for f in card.feature_names if f not in r})
        extra = sorted({k for r in body.records for k in r if k not in card.feature_names})
        if missing or extra:
            raise InvalidInput("records do not match the model's features", code="feature_mismatch",
                               details={"missing": missing[:50], "unexpected": extra[:50], "expected": card.feature_names})
        rows: Any = _record_rows(body.records, card)
    else:
        rows = body.instances
    try:
        arr = np.asarray(rows, dtype=NP.get(dtype, np.float32))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("instances must be a rectangular array of numbers", code="invalid_instances",
                           details={"reason": str(exc)[:300]}) from exc
    if spec is not None:
        want = spec.shape[1:]
        if arr.ndim != len(spec.shape) or any(w > 0 and w != g for w, g in zip(want, arr.shape[1:], strict=False)):
            raise InvalidInput(f"instances have shape {list(arr.shape)}, the model expects {spec.shape}",
                               code="shape_mismatch", details={"got": list(arr.shape), "expected": spec.shape})
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInput("instances contain NaN or infinity", code="invalid_instances")
    return arr, name, dtype


def _record_rows(records: list[dict[str, float | str]], card: ModelCard) -> list[list[float | str]]:
    """Rows in feature order; a categorical feature's text becomes its index in the card (unknown: -1, all zeros in
    the graph's one-hot), text anywhere else is refused."""
    cats: dict[str, list[str]] = card.preprocessing.get("categorical") or {}
    if not cats:
        if any(type(v) is str for r in records for v in r.values()):
            raise InvalidInput("features must be numbers", code="invalid_instances")
        return [[r[f] for f in card.feature_names] for r in records]
    index = {f: {c: float(i) for i, c in enumerate(v)} for f, v in cats.items()}
    out = []
    for r in records:
        row: list[float | str] = []
        for f in card.feature_names:
            v = r[f]
            if f in index:
                row.append(index[f].get(v.strip() if isinstance(v, str) else _text(v), -1.0))
            elif isinstance(v, str):
                raise InvalidInput(f"feature '{f}' must be a number", code="invalid_instances", details={"feature": f})
            else:
                row.append(v)
        out.append(row)
    return out


def _text(v: float) -> str:
    """A number sent for a categorical feature names the category it prints as (1.0 and 1 are '1')."""
    return str(int(v)) if float(v).is_integer() else str(v)


def _rows(card: ModelCard, outputs: dict[str, np.ndarray | None]) -> list[dict[str, Any]]:
    labels = card.labels
    n = next((len(a) for a in outputs.values() if a is not None and a.ndim), 0)
    out = []
    for i in range(n):
        row: dict[str, Any] = {}
        probs = outputs.get("probabilities")
        if probs is not None:
            p = probs[i].reshape(-1)
            idx = int(np.argmax(p))
            row["label"] = labels[idx] if labels and idx < len(labels) else idx
            row["confidence"] = float(p[idx])
            row["probabilities"] = ({lab: float(v) for lab, v in zip(labels, p, strict=False)} if labels else p.tolist())
        elif (lab := outputs.get("label")) is not None:
            v = int(lab.reshape(len(lab), -1)[i][0])
            row["label"] = labels[v] if labels and card.task == "classification" and 0 <= v < len(labels) else v
        if card.task == "anomaly_detection" and (lab := outputs.get("label")) is not None:
            row["anomaly"] = int(lab.reshape(len(lab), -1)[i][0]) == -1
        for name in ("value", "scores"):
            if (val := outputs.get(name)) is not None:
                row["value" if name == "value" else "score"] = float(val.reshape(len(val), -1)[i][0])
        out.append(row)
    return out


@router.post("/{name}", response_model=PredictResponse)
async def predict(name: str, body: PredictRequest, request: Request, response: Response, p: InferencePrincipal,
                  gw: GatewayDep) -> PredictResponse | JSONResponse:
    """Predict from JSON rows; the response names labels (from the card of the version that answers), probabilities, values."""
    start = time.perf_counter()
    if not NAME_RE.fullmatch(name):
        raise ModelNotFound(name)
    request.state.model = name
    client_ip = request.client.host if request.client else None
    pid = new_prediction_id()
    upstream_s = 0.0
    try:
        # A version Triton unloaded since it was last asked (a promote or rollback under traffic) is refused: ask Triton
        # again which version it serves and retry; the last try goes unpinned, so a swap never fails a prediction.
        ensure_visible(gw.extras, p, name)  # another user's model answers as a missing one
        for attempt in range(SWAP_RETRIES + 1):
            card, version, out, upstream_s = await _infer(name, body, gw, pin=attempt < SWAP_RETRIES)
            if out is not None or body.version:
                break
            gw.catalog.invalidate(name)
            await asyncio.sleep(0.02 * (attempt + 1))
        if out is None:
            raise ModelNotFound(name, version)
        arr, dtype, outputs, answered = out
    except MlstackError as exc:
        journal(gw.journal, pid, failure_record(p, model=name, version=str(body.version) if body.version else None,
                                                protocol="rest", status=int(exc.status), code=str(exc.code),
                                                total_s=time.perf_counter() - start, upstream_s=upstream_s, client_ip=client_ip))
        # The failed prediction has a history row too; its id goes back with the error.
        return JSONResponse(exc.to_body(), status_code=exc.status, headers={HEADER: pid})
    request.state.version = answered or ""
    rec = base_record(p, model=name, version=answered, protocol="rest", status=200, total_s=time.perf_counter() - start,
                      upstream_s=upstream_s, client_ip=client_ip)
    if not keep_of(gw, "rest").bare(name):  # what the model keeps: a summary, or a bare row (``proxy.keep``)
        rec.update(input_shape=json.dumps(list(arr.shape)), input_dtype=dtype,
                   input_sha256=hashlib.sha256(arr.tobytes()).hexdigest(), **summarize_outputs(outputs, card.labels))
    journal(gw.journal, pid, rec)
    response.headers[HEADER] = pid
    rows = _rows(card, outputs)
    for r in rows:
        for k, v in list(r.items()):
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    return PredictResponse(prediction_id=pid, model=name, version=answered, task=card.task, predictions=rows)


_Answered = tuple[np.ndarray, str, dict[str, np.ndarray | None], str | None]


async def _infer(name: str, body: PredictRequest, gw: Gateway, *,
                 pin: bool = True) -> tuple[ModelCard, int | None, _Answered | None, float]:
    """(card, version, (tensor, dtype, outputs, version that answered) or None if that version is gone, upstream seconds).

    The card is the one of the version Triton serves (or the pinned one) and the request is pinned to that version, so
    the features that built the tensor and the labels that name the answer belong to the model that computed it."""
    version = body.version or await gw.catalog.served_version(name, gw.upstream)
    card = gw.catalog.card(name, version)  # in memory; None (Triton cannot say) means the newest on disk
    arr, in_name, dtype = _tensor(body, card)
    # The same bounds as the v2 routes (shape, batch, element cap) against the config Triton serves.
    check(gw.catalog.spec(name, body.version), [Sent(in_name, dtype, list(arr.shape), int(arr.size))],
          gw.settings.gateway_max_tensor_elements)
    payload = json.dumps({"inputs": [{"name": in_name, "shape": list(arr.shape), "datatype": dtype,
                                      "data": arr.reshape(-1).tolist()}]}).encode()
    pinned = version if (pin or body.version) else None
    path = f"/v2/models/{name}" + (f"/versions/{pinned}" if pinned else "") + "/infer"
    up = await gw.upstream.request("POST", path, payload, {"content-type": "application/json"})
    gw.metrics.upstream_latency.labels("rest", name).observe(up.elapsed_s)
    if pinned and not body.version and _version_gone(up.status, up.content):
        return card, version, None, up.elapsed_s
    doc = json.loads(up.content) if up.content else {}
    if up.status != 200:
        msg = doc.get("error") if isinstance(doc, dict) else None
        raise _upstream_error(up.status, str(msg or "inference failed"), name, body.version)
    if not doc.get("outputs"):  # never a 200 without outputs, as on /v2 (Triton's response cache stores errors so)
        raise diagnose(payload, None)
    outputs: dict[str, np.ndarray | None] = {o["name"]: np.asarray(o["data"], dtype=NP.get(o["datatype"], np.float32)).reshape(o["shape"])
               for o in doc.get("outputs", []) if o.get("datatype") in NP}
    answered = str(doc.get("model_version") or version or "") or None
    return card, version, (arr, dtype, outputs, answered), up.elapsed_s


def _version_gone(status: int, content: bytes) -> bool:
    """Triton's answer for a version being unloaded: 404, or 400/503 "unknown model ... is not at ready state"."""
    return status == 404 or (status in (400, 503) and b"unknown model" in content)


def _upstream_error(status: int, message: str, name: str, version: int | None) -> MlstackError:
    if status == 404:
        return ModelNotFound(name, version)
    if 400 <= status < 500:
        return InvalidInput(message, code="inference_rejected", details={"upstream_status": status})
    err = MlstackError(message, code="inference_failed", details={"upstream_status": status})
    err.status = status if status >= 500 else 502
    return err
