"""Settings of each replica when ``mlstack up`` runs several Tritons or gateways on one host: ports, and the Triton list
every client tier balances over.

Gateways listen on consecutive HTTP ports from ``gateway_http_port`` (what clients are told); their gRPC ports and the
extra Tritons' ports take the next ports no other setting uses and nothing listens on. Several gateways share rate limits and revocations
only through Redis, so they need ``MLSTACK_REDIS_URL``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.errors import MlstackError
from mlstack.process import port_in_use
from mlstack.settings import Settings


class ReplicaError(MlstackError):
    """The replica counts cannot be run with these settings (the message says what to set)."""

    code = "replicas_refused"
    status = 400


@dataclass(frozen=True)
class Plan:
    tritons: list[Settings]  # one per Triton replica (its ports)
    gateways: list[Settings]  # one per gateway replica (its ports, the Triton list)
    shared: Settings  # what the other tiers (BentoML, the ingester, Prometheus) run with: the Triton list


def _used_ports(settings: Settings) -> dict[int, str]:
    return {v: f"MLSTACK_{k.upper()}" for k, v in settings.model_dump().items() if k.endswith("_port") and isinstance(v, int) and v}


def _next_free(start: int, taken: set[int], host: str) -> int:
    """The first port from ``start`` that no setting uses and nothing on ``host`` listens on."""
    port = start
    while port in taken or port_in_use(host, port):
        port += 1
    if port > 65535:
        raise ReplicaError(f"no free port above {start} for another replica")
    taken.add(port)
    return port


def plan(settings: Settings, tritons: int = 1, gateways: int = 1) -> Plan:
    """Each replica's settings; ReplicaError when the counts are invalid, Redis is missing or ports collide."""
    if tritons < 1 or gateways < 1:
        raise ReplicaError("--tritons and --gateways count replicas: at least 1 each")
    if gateways > 1 and not settings.redis_url:
        raise ReplicaError(f"--gateways {gateways} needs Redis for the state the gateways share (rate limits, login throttles, "
                           "revocations): set MLSTACK_REDIS_URL, e.g. MLSTACK_REDIS_URL=redis://127.0.0.1:6379/0")
    used = _used_ports(settings)
    http = [settings.gateway_http_port + i for i in range(gateways)]
    for port in http[1:]:
        owner = used.get(port)
        if owner and owner != "MLSTACK_GATEWAY_GRPC_PORT":  # the gRPC ports move out of the way; other tiers' don't
            raise ReplicaError(f"gateway HTTP ports {http[0]}-{http[-1]} overlap {owner}={port}; set MLSTACK_GATEWAY_HTTP_PORT "
                               f"to the first of {gateways} free consecutive ports", details={"port": port})
    taken = (set(used) - {settings.gateway_grpc_port}) | set(http)
    grpc = [_next_free(settings.gateway_grpc_port, taken, settings.gateway_host) for _ in range(gateways)]
    tri = [settings]
    taken.update({settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port})
    for _ in range(1, tritons):
        h, g, m = (_next_free(settings.triton_metrics_port, taken, settings.triton_host) for _ in range(3))
        tri.append(settings.model_copy(update={"triton_http_port": h, "triton_grpc_port": g, "triton_metrics_port": m}))
    update: dict[str, str] = {}
    if tritons > 1:
        update = {"triton_urls": ",".join(t.triton_http_url for t in tri),
                  "triton_grpc_urls": ",".join(t.triton_grpc_url for t in tri)}
    shared = settings.model_copy(update=update)
    gws = [shared.model_copy(update={"gateway_http_port": h, "gateway_grpc_port": g}) for h, g in zip(http, grpc, strict=True)]
    return Plan(tri, gws, shared)
