"""gRPC pass-through of ``inference.GRPCInferenceService`` to Triton: raw bytes both ways, auth from metadata.

Generic handlers never deserialize the payload, so any tritonclient.grpc call works unchanged; ModelInfer calls are
recorded in history (parsed later by the writer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from auth_api.authn import ANONYMOUS, Principal
from auth_api.core.errors import RateLimited, Unauthorized
from auth_api.proxy.records import base_record
from auth_api.proxy.summaries import grpc_finisher
from auth_api.state import Gateway

logger = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
PUBLIC = {SERVICE + "ServerLive", SERVICE + "ServerReady"}
ADMIN_ONLY = {SERVICE + m for m in ("RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister",
                                    "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
                                    "TraceSetting", "LogSettings")}
DROP_METADATA = {"authorization", "x-api-key"}
# 1 GiB: Triton's own limit; the HTTP body limit does not apply to streamed tensors here.
MAX_MESSAGE = 1 << 30


class _Proxy(grpc.GenericRpcHandler):
    def __init__(self, gw: Gateway, channel: aio.Channel):
        self.gw = gw
        self.channel = channel

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if not method.startswith(SERVICE):
            return None
        if method.endswith("/ModelStreamInfer"):
            return grpc.stream_stream_rpc_method_handler(self._stream(method))
        return grpc.unary_unary_rpc_method_handler(self._unary(method))

    async def _auth(self, method: str, context: aio.ServicerContext) -> tuple[Principal, list[tuple[str, Any]]]:
        md = list(context.invocation_metadata() or ())
        auth = next((v for k, v in md if k == "authorization"), None)
        key = next((v for k, v in md if k == "x-api-key"), None)
        forward = [(k, v) for k, v in md if k not in DROP_METADATA and not k.startswith("grpc-") and k != "user-agent"]
        if method in PUBLIC:
            return ANONYMOUS, forward
        p: Principal | None = None
        try:
            p = await self.gw.auth.resolve(str(auth) if auth else None, str(key) if key else None)
            if p is None:
                if not self.gw.settings.gateway_allow_anonymous:
                    self.gw.metrics.auth_failures.labels("missing_credentials").inc()
                    raise Unauthorized("authentication required: send 'authorization: Bearer <token>' metadata")
                p = ANONYMOUS
            self.gw.buckets.take(p.bucket if p is not ANONYMOUS else f"ip:{context.peer()}")
        except Unauthorized as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        except RateLimited:
            self.gw.metrics.rate_limited.inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded")
        assert p is not None
        if p.kind == "api_key" and "predict" not in p.scopes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this API key lacks the 'predict' scope")
        if method in ADMIN_ONLY and not p.at_least("admin"):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "requires role 'admin'")
        return p, forward

    def _unary(self, method: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        call = self.channel.unary_unary(method)
        name = method.removeprefix(SERVICE)

        async def handle(request: bytes, context: aio.ServicerContext) -> bytes:
            start = time.perf_counter()
            p, md = await self._auth(method, context)
            remaining = context.time_remaining()
            up_start = time.perf_counter()
            try:
                resp: bytes = await call(request, metadata=md, timeout=remaining)
            except aio.AioRpcError as exc:
                self.gw.metrics.grpc_requests.labels(name, exc.code().name).inc()
                await context.abort(exc.code(), exc.details() or "upstream error")
            self.gw.metrics.grpc_requests.labels(name, "OK").inc()
            if name == "ModelInfer":
                await self._record(p, context, request, resp, start, up_start, 200)
            return resp

        return handle

    async def _record(self, p: Principal, context: aio.ServicerContext, request: bytes, resp: bytes | None, start: float,
                      up_start: float, status: int) -> None:
        now = time.perf_counter()
        self.gw.metrics.upstream_latency.labels("grpc", "").observe(now - up_start)
        peer = context.peer() or ""
        ip = peer.split(":")[1] if peer.startswith("ipv4:") else peer[:64]
        rec = base_record(p, model="", version=None, protocol="grpc", status=status, total_s=now - start,
                          upstream_s=now - up_start, client_ip=ip)
        await self.gw.writer.put(rec, grpc_finisher(request, resp, self.gw.catalog.labels))

    def _stream(self, method: str) -> Callable[[AsyncIterator[bytes], aio.ServicerContext], AsyncIterator[bytes]]:
        async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
            _, md = await self._auth(method, context)
            call = self.channel.stream_stream(method)(requests, metadata=md)
            try:
                async for resp in call:
                    yield resp
            except aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "upstream error")

        return handle


async def start_grpc(gw: Gateway, host: str, port: int) -> tuple[aio.Server, aio.Channel, int]:
    """Start the pass-through server; returns (server, upstream channel, bound port)."""
    opts = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    channel = aio.insecure_channel(gw.settings.triton_grpc_url, options=opts)
    server = aio.server(options=opts)
    server.add_generic_rpc_handlers([_Proxy(gw, channel)])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        await channel.close()
        raise RuntimeError(f"cannot bind the gateway gRPC port {host}:{port}")
    await server.start()
    logger.info("gateway gRPC listening on %s:%d -> %s", host, bound, gw.settings.triton_grpc_url)
    return server, channel, bound
