"""Build history records for proxied calls and hand them to the writer."""

from __future__ import annotations

from typing import Any

from auth_api.authn import Principal
from auth_api.models import utcnow


def base_record(p: Principal, *, model: str, version: str | None, protocol: str, status: int, total_s: float,
                upstream_s: float, client_ip: str | None) -> dict[str, Any]:
    return {"user_id": p.user_id, "api_key_id": p.api_key_id, "model": model[:64], "version": version, "protocol": protocol,
            "status": status, "gateway_ms": max(0.0, (total_s - upstream_s) * 1000.0), "upstream_ms": upstream_s * 1000.0,
            "client_ip": client_ip, "created_at": utcnow()}
