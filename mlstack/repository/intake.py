"""What an uploaded version's card and extra files become: a user's (partial) card, what the live version already
knows, and an optional SHAP background sample, checked and merged before ``publish``.

A version published without a card must not wipe the model's schema: fields the user did not give are inherited
from the live version when the graph's inputs/outputs match it, and the caller is told which ones. Shared by
``mlstack publish`` and ``POST /api/v1/models/{name}/versions``.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from pydantic import ValidationError

from mlstack.errors import ModelNotFound, PublishError
from mlstack.repository.card import ModelCard, Task
from mlstack.repository.layout import read_card
from mlstack.repository.publish import load_onnx

logger = logging.getLogger(__name__)

BACKGROUND_FILE = "background.npy"
# The schema of a model (what its outputs mean, what its inputs are called): inherited by a version without a card.
INHERITED = ("task", "feature_names", "labels", "preprocessing", "description", "dataset")
DEFAULTS: dict[str, Any] = {"framework": "external", "algorithm": "unknown", "dataset": {"name": "unknown", "source": "external"}}
# Fields publish computes itself; a value in the user's card is replaced.
COMPUTED = ("name", "version", "inputs", "outputs", "opset", "onnx_sha256", "files", "background")


@dataclass
class Intake:
    card: ModelCard
    extra_files: dict[str, bytes] = field(default_factory=dict)
    inherited_from: int | None = None
    inherited: list[str] = field(default_factory=list)
    background: str | None = None
    label_output: str | None = None  # the output labels.txt names (classifiers with labels)

    def summary(self) -> dict[str, Any]:
        """What the caller is told about inheritance and the background sample."""
        return {"inherited": {"from_version": self.inherited_from, "fields": self.inherited} if self.inherited else None,
                "background": self.background}


def infer_task(model: onnx.ModelProto) -> Task:
    """The project's output naming (docs/model_card.md): scores -> anomaly, label/probabilities -> classifier."""
    outputs = {o.name for o in model.graph.output}
    if "scores" in outputs:
        return "anomaly_detection"
    int_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.INT64}
    if outputs & {"label", "probabilities"} or (int_outputs and len(outputs) == 2):
        return "classification"
    return "regression"


def parse_card(text: str | bytes | None) -> dict[str, Any]:
    """The user's card as a dict (may be partial); PublishError ``invalid_card`` when it is not a JSON object."""
    if text is None or (isinstance(text, str | bytes) and not text.strip()):
        return {}
    try:
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise PublishError("the model card is not UTF-8 text", code="invalid_card",
                           details={"errors": [{"field": None, "problem": "not UTF-8"}]}) from exc
    except json.JSONDecodeError as exc:
        raise PublishError(f"the model card is not valid JSON: {exc.msg} (line {exc.lineno})", code="invalid_card",
                           details={"errors": [{"field": None, "problem": exc.msg}]}) from exc
    if not isinstance(data, dict):
        raise PublishError("the model card must be a JSON object", code="invalid_card",
                           details={"errors": [{"field": None, "problem": "not an object"}]})
    return data


def validate_card(data: dict[str, Any]) -> ModelCard:
    """A complete card dict -> ModelCard; errors name the fields, never echo pydantic's dump or the input."""
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or None, "problem": e["msg"]} for e in exc.errors()][:20]
        listed = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        raise PublishError(f"the model card is invalid: {listed}", code="invalid_card", details={"errors": errors}) from exc


def _io(model: onnx.ModelProto) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    inits = {i.name for i in model.graph.initializer}
    ins = [(v.name, v.type.tensor_type.elem_type) for v in model.graph.input if v.name not in inits]
    outs = [(v.name, v.type.tensor_type.elem_type) for v in model.graph.output]
    return ins, outs


def _same_graph_io(model: onnx.ModelProto, card: ModelCard) -> bool:
    ins, outs = _io(model)
    names_in, names_out = [n for n, _ in ins], [n for n, _ in outs]
    return bool(card.inputs) and names_in == [t.name for t in card.inputs] and names_out == [t.name for t in card.outputs]


def _live_card(repo: Path, name: str) -> tuple[int, ModelCard] | None:
    from mlstack.repository.serving import live_version

    try:
        live = live_version(repo, name)
        return (live, read_card(repo, name, live)) if live is not None else None
    except (ModelNotFound, ValueError):
        return None


def feature_count(model: onnx.ModelProto) -> int | None:
    """F of a single ``[batch, F]`` input, else None (images, several inputs)."""
    ins, _ = _io(model)
    if len(ins) != 1:
        return None
    vi = next(v for v in model.graph.input if v.name == ins[0][0])
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value") or dims[1].dim_value <= 0:
        return None
    return int(dims[1].dim_value)


def check_background(data: bytes, n_features: int | None, *, max_rows: int) -> np.ndarray:
    """An uploaded ``.npy`` background -> float32 [n, F]; PublishError ``invalid_background`` naming what is wrong."""
    def bad(msg: str, **details: Any) -> PublishError:
        return PublishError(f"background sample refused: {msg}", code="invalid_background", details=details)

    if n_features is None:
        raise bad("a background sample needs a model with one [batch, features] input")
    if len(data) > max_rows * n_features * 8 + 4096:
        raise bad(f"file too large for {max_rows} rows of {n_features} features", max_rows=max_rows)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise bad("not a .npy array file (numpy.save, no pickled objects)", reason=str(exc)[:200]) from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise bad("the array must be numeric", dtype=str(getattr(arr, "dtype", "?")))
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise bad(f"shape {list(arr.shape)}, expected [rows, {n_features}]", shape=list(arr.shape), features=n_features)
    if not 1 <= arr.shape[0] <= max_rows:
        raise bad(f"{arr.shape[0]} rows; between 1 and {max_rows}", rows=int(arr.shape[0]), max_rows=max_rows)
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise bad("values must be finite float32 numbers (no NaN, no infinity, |x| < 3.4e38)")
    return out


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def prepare(repo: Path, name: str, onnx_bytes: bytes, card: str | bytes | dict[str, Any] | None, *,
            background: bytes | None = None, max_background_rows: int = 1000, created_by: str | None = None) -> Intake:
    """Merge the user's card with the live version's schema, validate it and the background sample."""
    model = load_onnx(onnx_bytes)
    data = dict(card) if isinstance(card, dict) else parse_card(card)
    for key in COMPUTED:
        data.pop(key, None)
    inherited: list[str] = []
    live = _live_card(Path(repo), name)
    if live is not None and _same_graph_io(model, live[1]):
        for key in INHERITED:
            value = getattr(live[1], key)
            if key not in data and value:
                data[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
                inherited.append(key)
    if "task" not in data:
        data["task"] = infer_task(model)
    for key, value in DEFAULTS.items():
        data.setdefault(key, value)
    data["name"] = name
    if created_by:
        data["created_by"] = created_by
    intake = Intake(card=validate_card(data), inherited=inherited,
                    inherited_from=live[0] if live is not None and inherited else None)
    n_features = feature_count(model)
    if background is not None:
        arr = check_background(background, n_features, max_rows=max_background_rows)
        if intake.card.feature_names and len(intake.card.feature_names) != arr.shape[1]:
            raise PublishError(f"background sample has {arr.shape[1]} columns but the card names "
                               f"{len(intake.card.feature_names)} features", code="invalid_background")
        intake.extra_files[BACKGROUND_FILE] = _npy(arr)
        intake.background = "uploaded"
    elif live is not None and intake.inherited_from is not None:
        prev_bg = Path(repo) / name / str(live[0]) / BACKGROUND_FILE
        try:
            arr = np.load(prev_bg, allow_pickle=False)
        except (OSError, ValueError):
            arr = None
        if arr is not None and arr.ndim == 2 and arr.shape[1] == n_features:
            intake.extra_files[BACKGROUND_FILE] = _npy(arr.astype(np.float32))
            intake.background = f"inherited:v{live[0]}"
    intake.card.background = intake.background
    if intake.card.labels:
        _, outs = _io(model)
        floats = [n for n, t in outs if t in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)]
        intake.label_output = "probabilities" if "probabilities" in [n for n, _ in outs] else (floats[0] if floats else None)
    return intake
