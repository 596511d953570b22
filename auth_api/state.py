"""Everything the app holds for its lifetime (engine, clients, journal, caches), built once in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth_api.authn import Authenticator
from auth_api.catalog import Catalog
from auth_api.core.hashpool import HashPool
from auth_api.core.limits import TokenBuckets
from auth_api.core.metrics import GatewayMetrics
from auth_api.core.security import TokenCodec
from auth_api.core.throttle import LoginThrottle
from auth_api.ingester import EmbeddedIngester
from auth_api.journal import JournalWriter
from auth_api.proxy.upstream import Upstream
from mlstack.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


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
    journal: JournalWriter
    hashing: HashPool
    throttle: LoginThrottle
    grpc_port: int | None = None
    ingester: EmbeddedIngester | None = None  # None: the external ingester process turns the journal into rows
    extras: dict[str, Any] = field(default_factory=dict)

    async def run_db(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(session, ...)`` on the threadpool with a session of its own (async routes never block the loop on SQL)."""

        def call() -> T:
            with Session(self.engine) as db:
                return fn(db, *args, **kwargs)

        return await run_in_threadpool(call)
