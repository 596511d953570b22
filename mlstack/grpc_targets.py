"""One gRPC channel target for one Triton or several replicas (the gateway's pass-through and BentoML's runner)."""

from __future__ import annotations

import json
import socket
from typing import Any

SERVICE = "inference.GRPCInferenceService"


def channel_target(targets: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    """(target, extra channel options) for ``host:port`` endpoints.

    Several replicas share one channel: gRPC's round_robin policy over their addresses (a replica that refuses
    connections is skipped until it accepts again) and one retry, on the next replica, of a call that failed
    UNAVAILABLE (refused, or reset before an answer; inference is idempotent). gRPC's ``ipv4:``/``ipv6:`` targets
    need addresses, so host names are resolved once, when the channel is made.
    """
    if len(targets) == 1:
        return targets[0], []
    resolved = [_resolve(t) for t in targets]
    families = {family for family, _ in resolved}
    if len(families) > 1:
        raise ValueError(f"Triton gRPC replicas mix IPv4 and IPv6 addresses: {targets}")
    scheme = "ipv6" if families == {socket.AF_INET6} else "ipv4"
    addrs = [(family, addr) for family, addr in resolved]
    config = {"loadBalancingConfig": [{"round_robin": {}}],
              "methodConfig": [{"name": [{"service": SERVICE}],
                                "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                                                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}
    return f"{scheme}:{','.join(a for _, a in addrs)}", [("grpc.service_config", json.dumps(config)),
                                                          ("grpc.enable_retries", 1)]


def _resolve(target: str) -> tuple[int, str]:
    """(family, "ip:port") for ``host:port``, IPv4 first (``localhost`` is both)."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            info = socket.getaddrinfo(host, int(port), family=family, type=socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        ip = str(info[0][4][0])
        return family, f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
    raise ValueError(f"cannot resolve the Triton gRPC replica {target!r}")
