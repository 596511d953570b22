"""Records keyed by feature name -> the model's input matrix (columns in the card's ``feature_names`` order),
and model outputs -> per-record results people read."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlstack.repository.card import ModelCard
from services.bento.errors import InvalidRecords, UnsupportedModel

MAX_RECORDS = 10_000


def check_tabular(card: ModelCard) -> list[str]:
    """The card's feature names; UnsupportedModel for models that do not take one row of named features."""
    if not card.feature_names or (card.preprocessing or {}).get("image") is not None:
        raise UnsupportedModel(f"model '{card.name}' does not take records of named features", details={"model": card.name})
    return list(card.feature_names)


def to_matrix(records: Any, card: ModelCard) -> np.ndarray:
    """float32 [N, F]; InvalidRecords (422) names unknown, missing or non-numeric features."""
    names = check_tabular(card)
    if not isinstance(records, list) or not records:
        raise InvalidRecords("records must be a non-empty list of objects keyed by feature name",
                             details={"feature_names": names})
    if len(records) > MAX_RECORDS:
        raise InvalidRecords(f"{len(records)} records; the limit is {MAX_RECORDS}", details={"limit": MAX_RECORDS})
    known = set(names)
    x = np.empty((len(records), len(names)), dtype=np.float32)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidRecords(f"record {i} is not an object keyed by feature name", details={"record": i})
        unknown = sorted(set(rec) - known)
        missing = [n for n in names if n not in rec]
        if unknown or missing:
            parts = ([f"unknown features: {', '.join(unknown)}"] if unknown else []) + (
                [f"missing features: {', '.join(missing)}"] if missing else [])
            raise InvalidRecords(f"record {i}: {'; '.join(parts)}",
                                 details={"record": i, "unknown": unknown, "missing": missing, "feature_names": names})
        bad = [n for n in names if isinstance(rec[n], bool) or not isinstance(rec[n], int | float)
               or not math.isfinite(rec[n])]
        if bad:
            raise InvalidRecords(f"record {i}: features must be finite numbers: {', '.join(bad)}",
                                 details={"record": i, "invalid": bad})
        x[i] = [rec[n] for n in names]
    return x


def results(card: ModelCard, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per-record results by task: classes with probabilities, values, or anomaly labels and scores."""
    if card.task == "classification":
        labels = card.labels or []
        idx = outputs["label"].reshape(-1)
        proba = outputs.get("probabilities")
        out = []
        for i, k in enumerate(idx):
            item: dict[str, Any] = {"label": labels[int(k)] if 0 <= int(k) < len(labels) else str(int(k))}
            if proba is not None:
                item["probabilities"] = {labels[j] if j < len(labels) else str(j): float(p) for j, p in enumerate(proba[i])}
            out.append(item)
        return out
    if card.task == "regression":
        return [{"value": float(v)} for v in outputs["value"].reshape(-1)]
    labels_arr = outputs["label"].reshape(-1)
    scores = outputs["scores"].reshape(-1)
    return [{"label": int(lab), "anomaly": bool(lab == -1), "score": float(s)} for lab, s in zip(labels_arr, scores, strict=True)]
