"""An analysis run: window the telemetry, score every window through Triton, add the twin's residual, decide a verdict,
store it and raise alerts (one transaction for both)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from apps.battery import alerts, store, twin
from apps.battery.access import iso
from apps.battery.jobs import error_body
from apps.battery.models import Analysis, Battery, Twin
from apps.battery.scoring import ANOMALY_MODEL, FAULT_MODEL, infer
from apps.battery.windows import FEATURE_NAMES, Windows, cut
from auth_api.models import utcnow
from auth_api.state import Gateway

logger = logging.getLogger(__name__)
NORMAL = "normal"
ANOMALOUS_SHARE = 0.5  # verdict "anomalous" when at least this share of windows is flagged by the screen or the twin


def _start(db: Session, analysis_id: int) -> tuple[Analysis, Battery, dict[str, Any] | None, store.Series]:
    a = db.get(Analysis, analysis_id)
    assert a is not None
    b = db.get(Battery, a.battery_id)
    assert b is not None
    a.status = "running"
    db.add(a)
    db.commit()
    db.refresh(a)
    db.refresh(b)
    tw = db.get(Twin, b.id)
    return a, b, (dict(tw.params) if tw is not None else None), store.read(db.connection(), a.battery_id, a.from_ts, a.to_ts)


def _ambient(b: Battery) -> float | None:
    v = (b.meta or {}).get("ambient_c")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and -40 <= v <= 80 else None


def _soc_at(s: store.Series, starts: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(s.ts, starts), 0, max(len(s.ts) - 1, 0))
    return s.soc[idx] if len(s.ts) else np.zeros(0)


async def run(gw: Gateway, analysis_id: int) -> None:
    """The background body of ``POST /batteries/{id}/analyses``; any failure is stored on the analysis."""
    try:
        _, b, twin_params, series = await gw.run_db(_start, analysis_id)
        assert b.id is not None
        w = await run_in_threadpool(cut, series, _ambient(b))
        result = await _score(gw, w, twin_params, _soc_at(series, w.start))
        await gw.run_db(_finish, analysis_id, b.owner_id, b.id, w, result)
    except Exception as exc:  # stored on the row: the client polls and reads it
        await gw.run_db(_fail, analysis_id, error_body(exc))


async def _score(gw: Gateway, w: Windows, twin_params: dict[str, Any] | None, soc0: np.ndarray) -> dict[str, Any]:
    n = len(w.start)
    out: dict[str, Any] = {"features": np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)}
    if n == 0:
        return out
    x = await run_in_threadpool(lambda: w.features)
    fault = await infer(gw, FAULT_MODEL, x)
    anomaly = await infer(gw, ANOMALY_MODEL, x)
    out.update(features=x, fault=fault, anomaly=anomaly)
    if twin_params is not None:
        out["twin"] = await run_in_threadpool(twin.residuals, twin_params, w, soc0)
    return out


def _windows(w: Windows, result: dict[str, Any]) -> list[dict[str, Any]]:
    if not len(w.start):
        return []
    fault, anomaly = result["fault"], result["anomaly"]
    probs = fault.outputs["probabilities"].reshape(len(w.start), -1)
    labels = fault.labels or [str(k) for k in range(probs.shape[1])]
    scores = anomaly.outputs["scores"].reshape(-1)
    ev, et = result.get("twin", (None, None))
    rows = []
    for k in range(len(w.start)):
        c = int(np.argmax(probs[k]))
        row: dict[str, Any] = {
            "index": k, "start": iso(float(w.start[k])), "end": iso(float(w.start[k] + w.n_valid[k] * (w.time_s[1] - w.time_s[0]))),
            "fault": labels[c], "probability": float(probs[k, c]),
            "probabilities": {lab: float(p) for lab, p in zip(labels, probs[k], strict=False)},
            "anomaly": bool(scores[k] < 0), "anomaly_score": float(scores[k]),
            "features": {f: float(v) for f, v in zip(FEATURE_NAMES, result["features"][k], strict=True)}}
        reasons = []
        if labels[c] != NORMAL and row["probability"] > alerts.FAULT_P:
            reasons.append(f"fault:{labels[c]}")
        if row["anomaly"]:
            reasons.append("anomaly")
        if ev is not None and et is not None:
            row["twin_residual_v_mv"], row["twin_residual_t_c"] = float(ev[k]), float(et[k])
            if ev[k] > twin.RESIDUAL_V_MV or et[k] > twin.RESIDUAL_T_C:
                reasons.append("twin_residual")
        row["flags"] = reasons
        rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``fault`` (a confident fault class in any window), ``anomalous`` (most windows flagged), ``healthy`` or ``no_data``."""
    if not rows:
        return "no_data", {}
    faults = [r["fault"] for r in rows if any(f.startswith("fault:") for f in r["flags"])]
    share = sum(1 for r in rows if "anomaly" in r["flags"] or "twin_residual" in r["flags"]) / len(rows)
    summary: dict[str, Any] = {
        "windows": len(rows), "fault_windows": len(faults), "anomaly_windows": sum(r["anomaly"] for r in rows),
        "classes": {c: sum(r["fault"] == c for r in rows) for c in sorted({r["fault"] for r in rows})},
        "max_fault_probability": max((r["probability"] for r in rows if r["fault"] != NORMAL), default=0.0),
        "min_anomaly_score": min(r["anomaly_score"] for r in rows)}
    if "twin_residual_v_mv" in rows[0]:
        summary["twin_residual_v_mv_max"] = max(r["twin_residual_v_mv"] for r in rows)
        summary["twin_residual_t_c_max"] = max(r["twin_residual_t_c"] for r in rows)
    if faults:
        summary["fault"] = max(set(faults), key=faults.count)
        return "fault", summary
    return ("anomalous" if share >= ANOMALOUS_SHARE else "healthy"), summary


def _finish(db: Session, analysis_id: int, owner_id: int, battery_id: int, w: Windows, result: dict[str, Any]) -> None:
    rows = _windows(w, result)
    a = db.get(Analysis, analysis_id)
    if a is None:  # the battery was deleted meanwhile
        return
    a.verdict, summary = verdict(rows)
    summary["windows_skipped"] = w.skipped
    if rows:
        summary["models"] = {FAULT_MODEL: result["fault"].version, ANOMALY_MODEL: result["anomaly"].version}
    a.summary, a.windows, a.status, a.finished_at = summary, rows, "done", utcnow()
    db.add(a)
    source = f"analysis:{analysis_id}"
    events = []
    for r in rows:
        events.append(alerts.event(FAULT_MODEL, result["fault"].version, owner_id, battery_id, source, label=r["fault"],
                                   probability=r["probability"]))
        events.append(alerts.event(ANOMALY_MODEL, result["anomaly"].version, owner_id, battery_id, source,
                                   label="anomaly" if r["anomaly"] else "normal", score=r["anomaly_score"]))
    ids = alerts.evaluate(db.connection(), events)
    a.summary = {**summary, "alerts": [str(i) for i in ids]}
    db.add(a)
    db.commit()


def _fail(db: Session, analysis_id: int, error: dict[str, Any]) -> None:
    a = db.get(Analysis, analysis_id)
    if a is not None:
        a.status, a.error, a.finished_at = "failed", error, utcnow()
        db.add(a)
        db.commit()
