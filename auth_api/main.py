"""The FastAPI app: ``create_app(settings)`` wires routers, middleware and the lifespan (DB, clients, writer, gRPC)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from apps.battery.routes import router as battery_router  # the battery-fleet app (composition root only)
from auth_api import bootstrap, registry, stored_inputs, workers
from auth_api.accounts import open_invalidations, start_invalidations, stop_invalidations
from auth_api.alerts.engine import AlertHook
from auth_api.alerts.metrics import AlertsCollector
from auth_api.alerts.sender import WebhookSender
from auth_api.api.docs import ERROR_RESPONSES, install_offline_docs
from auth_api.api.routes import api_keys, auth, dashboard, files, health, history, model_cache, models, predict, roles, tasks, users, v2
from auth_api.api.routes.alert_rules import router as alert_rules_router
from auth_api.api.routes.alerts import router as alerts_router
from auth_api.api.routes.datasets import router as datasets_router
from auth_api.api.routes.jobs import router as jobs_router
from auth_api.api.routes.model_shares import router as model_shares_router
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Authenticator
from auth_api.catalog import Catalog
from auth_api.core import db
from auth_api.core.errors import install_handlers
from auth_api.core.hashpool import HashPool
from auth_api.core.limits import BodySizeLimit, open_buckets
from auth_api.core.metrics import GatewayMetrics, MetricsMiddleware
from auth_api.core.security import TokenCodec, load_jwt_key
from auth_api.core.throttle import LoginThrottle
from auth_api.ingester import EmbeddedIngester, Ingester, IngestMetrics
from auth_api.jobs.service import close_jobs, open_jobs
from auth_api.journal import JournalWriter
from auth_api.mail.sender import OutboxSender
from auth_api.proxy import bento, cache_admin
from auth_api.proxy.cache import open_cache
from auth_api.proxy.fastpath import InferFastPath
from auth_api.proxy.grpc_server import start_grpc
from auth_api.proxy.replicas import ReplicaCollector
from auth_api.proxy.upstream import Upstream
from auth_api.repo_sync import RepositorySync
from auth_api.state import Gateway
from auth_api.ws.open_count import close_connections
from auth_api.ws.route import router as ws_router
from mlstack.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """The mlstack front door: log in (the **Authorize** button uses `/api/v1/auth/token`), predict over
REST (`/api/v1/predict/{name}`) or KServe v2 (`/v2/models/{name}/infer`, also gRPC on the gateway gRPC port),
browse your history and dashboards, and manage model versions."""


def _build_gateway(settings: Settings, metrics: GatewayMetrics) -> Gateway:
    engine = db.make_engine(db.database_url(settings))
    db.upgrade(engine)
    bootstrap.ensure_admin(engine, settings)
    try:
        registry.sync(engine, settings.repository)
    except Exception:  # a broken repository must not stop the gateway; the registry routes report it
        logger.exception("could not mirror the model repository into model_versions")
    codec = TokenCodec(load_jwt_key(settings), settings.gateway_access_token_ttl_s, settings.gateway_refresh_token_ttl_s)
    catalog = Catalog(settings.repository)
    journal_dir = settings.var_dir / "journal"
    journal = JournalWriter(journal_dir, segment_bytes=settings.gateway_journal_segment_bytes,
                            fsync_interval_s=settings.gateway_journal_fsync_interval_s, registry=metrics.registry)
    ingester = None
    if settings.gateway_ingester == "embedded":
        ingester = EmbeddedIngester(Ingester(engine, journal_dir, catalog.labels, batch_size=settings.gateway_history_batch_size,
                                             poll_s=settings.gateway_history_flush_interval_s,
                                             metrics=IngestMetrics(metrics.registry, metrics.history_written),
                                             hooks=[AlertHook()]))
    return Gateway(settings=settings, metrics=metrics, engine=engine, codec=codec,
                   auth=Authenticator(engine, codec, metrics, account_ttl_s=settings.gateway_account_cache_ttl_s,
                                      invalidations=open_invalidations(settings.redis_url)),
                   buckets=open_buckets(settings.gateway_rate_limit_rps, settings.gateway_rate_limit_burst, settings.redis_url,
                                        workers.worker_count()),
                   catalog=catalog, upstream=Upstream(settings), journal=journal, ingester=ingester,
                   hashing=HashPool(settings.gateway_password_hash_workers, lock_dir=settings.var_dir),
                   throttle=LoginThrottle.from_settings(settings))


class GatewayApp(FastAPI):
    """FastAPI, except that ``POST /v2/models/.../infer`` is served by the fast path before FastAPI's own stack."""

    fast_path: InferFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.fast_path is not None:
            m = self.fast_path.match(scope)
            if m is not None and (gw := self.state._state.get("gateway")) is not None:
                await self.fast_path.serve(gw, m, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, grpc: bool = True) -> FastAPI:
    """A gateway app for ``settings``; its lifespan opens the DB, the upstream clients and (if ``grpc``) the gRPC port."""
    settings = settings or get_settings()
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repo_sync = RepositorySync(settings)  # an s3:// repository: its mirror first, the catalog reads it
        await run_in_threadpool(repo_sync.start, (info := workers.current()) is None or info.index == 0)
        gw = await run_in_threadpool(_build_gateway, settings, metrics)
        metrics.bind_models(gw.catalog)  # model labels: repository models only
        if gw.ingester is not None:
            gw.ingester.start()
        await gw.upstream.start()
        assert gw.upstream.replicas is not None
        metrics.registry.register(ReplicaCollector(gw.upstream.replicas))
        await start_invalidations(gw.auth.invalidations)
        await bento.open_client(settings, gw.extras)
        pcache = open_cache(settings, metrics.registry, metrics.model_label, gw.extras)
        # Sibling workers' requests (a cache flush must reach every worker's in-process cache).
        control = await workers.serve_control(info, cache_admin.handlers(gw.extras)) if (info := workers.current()) else None
        server = channel = None
        if grpc:
            server, channel, gw.grpc_port = await start_grpc(gw, settings.gateway_host, settings.gateway_grpc_port)
        mailer = gw.extras["mailer"] = OutboxSender(gw.engine, settings)
        mailer.start()
        webhooks = gw.extras["webhooks"] = WebhookSender(gw.engine, settings)
        webhooks.start()
        if (info := workers.current()) is None or info.index == 0:  # alerts are counted from the DB: one exporter
            metrics.registry.register(AlertsCollector(gw.engine))
        stored_inputs.open_store(gw)
        await open_jobs(gw)  # training jobs + model shares; Ray starts on the first job
        app.state.gateway = gw
        try:
            yield
        finally:
            if control is not None:
                control.close()
            await stored_inputs.close_store(gw)  # inputs still being stored finish before the database goes
            await run_in_threadpool(repo_sync.stop)
            await close_jobs(gw)
            await mailer.stop()
            await webhooks.stop()
            if server is not None:
                await server.stop(grace=5)
            if channel is not None:
                await channel.close()
            gw.journal.close()
            if gw.ingester is not None:  # after the journal closes: it ingests all of it, then deletes the segment
                await run_in_threadpool(gw.ingester.stop)
                logger.info("history writer drained and stopped")
            await gw.upstream.aclose()
            await stop_invalidations(gw.auth.invalidations)
            await gw.buckets.close()
            await gw.throttle.close()
            await close_connections(gw.extras)
            await bento.close_client(gw.extras)
            await pcache.close()
            gw.hashing.close()
            gw.engine.dispose()
            logger.info("gateway stopped")

    app = GatewayApp(title="mlstack gateway", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                     docs_url=None, redoc_url=None, responses=ERROR_RESPONSES)
    install_offline_docs(app)
    app.fast_path = InferFastPath(cors=bool(settings.gateway_cors_origins))
    install_handlers(app)
    # Every /api/v1 route refuses query parameters it does not declare (a misspelt ``?to=`` on rollback would otherwise
    # roll back to the previous version); each route's own parameters, dependencies' included, stay allowed.
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(no_unknown_query)])
    for r in (auth, users, roles, api_keys, history, dashboard, models, model_cache, predict, tasks):
        api.include_router(r.router)
    api.include_router(files.router)
    api.include_router(datasets_router)
    api.include_router(jobs_router)
    api.include_router(model_shares_router)
    api.include_router(alert_rules_router)
    api.include_router(alerts_router)
    api.include_router(battery_router)
    api.include_router(ws_router)
    api.include_router(files.history_router)
    app.include_router(api)
    app.include_router(v2.router)
    app.include_router(health.router)
    if settings.gateway_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.gateway_cors_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes,  # uploads: their own cap + framing
                       larger={"/api/v1/datasets": max(settings.gateway_max_body_bytes, settings.dataset_max_bytes + 64 * 1024)})
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    return app
