"""Everything the app holds for its lifetime (engine, clients, writer, caches), built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from auth_api.authn import Authenticator
from auth_api.catalog import Catalog
from auth_api.core.limits import TokenBuckets
from auth_api.core.metrics import GatewayMetrics
from auth_api.core.security import TokenCodec
from auth_api.history_writer import HistoryWriter
from auth_api.proxy.upstream import Upstream
from mlstack.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    metrics: GatewayMetrics
    engine: Engine
    codec: TokenCodec
    auth: Authenticator
    buckets: TokenBuckets
    catalog: Catalog
    upstream: Upstream
    writer: HistoryWriter
    grpc_port: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
