"""The non-predict commands of the WebSocket (``labels``/``emotions``, ``model_info``, ``health``, ``ping``, ``config``)
and the parsing of ``predict`` messages into frames."""

from __future__ import annotations

import time
from typing import Any

from auth_api.core.errors import InvalidInput
from auth_api.readiness import readiness_of
from auth_api.state import Gateway
from auth_api.ws.frames import Frame
from mlstack.errors import ModelNotFound
from mlstack.repository.layout import NAME_RE

MAX_TOP_K = 100


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("'model' must name a model", code="missing_model")
    if not NAME_RE.fullmatch(value):
        raise ModelNotFound(value[:64])
    return value


def top_k(value: Any, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or not 1 <= value <= MAX_TOP_K:
        raise InvalidInput(f"'top_k' must be an integer from 1 to {MAX_TOP_K}", code="invalid_top_k")
    return value


def version(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidInput("'version' must be a positive integer", code="invalid_version")
    return value


def predict_frame(msg: dict[str, Any], default_model: str | None, default_top_k: int, size: int) -> Frame:
    """A JSON ``predict`` message -> a Frame (InvalidInput unless it carries exactly one of image, records, inputs)."""
    present = [k for k in ("image", "records", "inputs") if msg.get(k) is not None]
    if len(present) != 1:
        raise InvalidInput("send exactly one of 'image' (base64), 'records' or 'inputs'", code="invalid_payload")
    if present == ["image"] and not isinstance(msg["image"], str):
        raise InvalidInput("'image' must be a base64 string", code="invalid_payload")
    model = model_name(msg.get("model", default_model))
    return Frame(model=model, received=time.perf_counter(), request_id=msg.get("request_id"), image=msg.get("image"),
                 records=msg.get("records"), inputs=msg.get("inputs"), version=version(msg.get("version")),
                 top_k=top_k(msg.get("top_k"), default_top_k), size=size)


def labels(gw: Gateway, msg: dict[str, Any], default_model: str | None) -> dict[str, Any]:
    name = model_name(msg.get("model", default_model))
    card = gw.catalog.card(name)  # ModelNotFound for a model the repository does not hold
    return {"type": "labels", "model": name, "version": card.version, "labels": gw.catalog.labels(name, str(card.version)) or []}


async def model_info(gw: Gateway, msg: dict[str, Any], default_model: str | None) -> dict[str, Any]:
    name = model_name(msg.get("model", default_model))
    served = await gw.catalog.served_version(name, gw.upstream)
    card = gw.catalog.card(name, served)
    return {"type": "model_info", "model": name, "version": card.version, "task": card.task, "algorithm": card.algorithm,
            "description": card.description, "inputs": [t.model_dump() for t in card.inputs],
            "outputs": [t.model_dump() for t in card.outputs], "labels": card.labels or [], "feature_names": card.feature_names,
            "metrics": card.metrics, "image": bool(card.preprocessing.get("image"))}


async def health(gw: Gateway) -> dict[str, Any]:
    ready, body = await readiness_of(gw).report()
    deps = body.get("dependencies", {})
    return {"type": "health", "status": "ready" if ready else "not_ready", "gateway": "up",
            "triton": deps.get("triton", {}).get("state", "unknown"), "bento": deps.get("bento", {}).get("state", "unknown"),
            "database": deps.get("database", {}).get("state", "unknown")}
