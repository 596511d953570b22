"""Build history records for proxied calls and append them to the gateway's journal (the ingester makes them rows).

Every prediction an authenticated caller asked for leaves a row keyed by its prediction id: successes with the raw
bytes their summary needs (``summary``: a tuple whose first item names the kind, see ``auth_api.ingester.summarize``),
failures with their status and error code and nothing else (no body summary, so a failure costs the hot path one dict).
"""

from __future__ import annotations

import time
from typing import Any

from auth_api.authn import Principal
from auth_api.journal import JournalWriter
from mlstack.errors import MlstackError

HEADER = "X-Prediction-Id"
RAW_HEADER = b"x-prediction-id"


def base_record(p: Principal, *, model: str, version: str | None, protocol: str, status: int, total_s: float,
                upstream_s: float, client_ip: str | None) -> dict[str, Any]:
    return {"user_id": p.user_id, "api_key_id": p.api_key_id, "model": model[:64], "version": version, "protocol": protocol,
            "status": status, "gateway_ms": max(0.0, (total_s - upstream_s) * 1000.0), "upstream_ms": upstream_s * 1000.0,
            "client_ip": client_ip, "created_at": time.time()}


def failure_record(p: Principal, *, model: str, version: str | None, protocol: str, status: int, code: str, total_s: float,
                   upstream_s: float, client_ip: str | None) -> dict[str, Any]:
    """A failed prediction: status and error code, no outputs."""
    rec = base_record(p, model=model, version=version[:16] if version else None, protocol=protocol, status=status,
                      total_s=total_s, upstream_s=upstream_s, client_ip=client_ip)
    rec["error_code"] = code[:64]
    return rec


def journal(j: JournalWriter, prediction_id: str, row: dict[str, Any], summary: tuple[Any, ...] | None = None) -> None:
    """Append one prediction to the journal; once this returns, its history row is as good as written."""
    j.append({"id": prediction_id, "r": row, "s": summary})


def error_status(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) a client sees for ``exc``; anything not a domain error is an internal 500."""
    if isinstance(exc, MlstackError):
        return int(exc.status), str(exc.code)
    return 500, "internal_error"


def upstream_code(status: int) -> str:
    """The error code of an inference server's non-200 answer (the same words the REST predict route uses)."""
    if status == 404:
        return "model_not_found"
    return "inference_rejected" if 400 <= status < 500 else "inference_failed"
