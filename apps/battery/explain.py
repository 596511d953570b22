"""Explanations of an analysis: SHAP and LIME side by side for its flagged windows, through the BentoML ``explain`` task
(Kernel SHAP and lime's tabular explainer on the served ``battery-fault`` model), cached on the analysis."""

from __future__ import annotations

import json
from typing import Any

from apps.battery.scoring import FAULT_MODEL
from auth_api.proxy.bento import get_client
from auth_api.state import Gateway
from mlstack.errors import MlstackError

MAX_EXPLAINED = 3  # windows per analysis (Kernel SHAP costs ~50k model rows per window)
TOP = 5


def pick(windows: list[dict[str, Any]], limit: int = MAX_EXPLAINED) -> list[dict[str, Any]]:
    """The flagged windows, most confident fault first (then the most anomalous)."""
    flagged = [w for w in windows if w.get("flags")]
    flagged.sort(key=lambda w: (-(w["probability"] if w["fault"] != "normal" else 0.0), w["anomaly_score"]))
    return flagged[:limit]


async def _call(gw: Gateway, method: str, records: list[dict[str, float]]) -> dict[str, Any]:
    body = json.dumps({"model": FAULT_MODEL, "records": records, "method": method}).encode()
    up = await get_client(gw.extras).post("explain", body, "application/json")
    try:
        doc = json.loads(up.content)
    except ValueError:
        doc = {}
    if up.status != 200:
        err = doc.get("error") if isinstance(doc, dict) else None
        exc = MlstackError(str((err or {}).get("message") or "explanation failed"), code=str((err or {}).get("code") or
                           "explain_failed"), details={"upstream_status": up.status, "method": method})
        exc.status = up.status if 400 <= up.status < 600 else 502
        raise exc
    return dict(doc)


def _rows(doc: dict[str, Any], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for w, r in zip(windows, doc.get("results") or doc.get("explanations") or [], strict=False):
        contrib = r.get("contributions") or {}
        top = sorted(contrib.items(), key=lambda kv: -abs(kv[1]))[:TOP]
        out.append({"window": w["index"], "start": w["start"], "fault": w["fault"], **r,
                    "top_features": [{"feature": k, "contribution": v} for k, v in top]})
    return out


async def explain(gw: Gateway, windows: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = pick(windows)
    if not chosen:
        return {"model": FAULT_MODEL, "windows": [], "feature_names": [], "shap": [], "lime": [],
                "note": "no window was flagged: nothing to explain"}
    records = [w["features"] for w in chosen]
    shap = await _call(gw, "shap", records)
    lime = await _call(gw, "lime", records)
    return {"model": FAULT_MODEL, "version": shap.get("version"), "windows": [w["index"] for w in chosen],
            "feature_names": shap.get("feature_names") or list(records[0]), "background": shap.get("background"),
            "shap": {"method": shap.get("method"), "rows": _rows(shap, chosen)},
            "lime": {"method": lime.get("method"), "rows": _rows(lime, chosen)}}
