"""gRPC pass-through of ``inference.GRPCInferenceService`` to Triton: raw bytes both ways, auth from metadata.

Generic handlers never re-encode the payload, so any tritonclient.grpc call works unchanged. ModelInfer and every
message of ModelStreamInfer are parsed once and checked against the model's config (``tensors``) before they are
forwarded (INVALID_ARGUMENT otherwise); an OK without outputs is never forwarded (``empty_answer``). Every ModelInfer
call and every streamed answer (``grpc_stream``) is a prediction: a history row (journaled, summarised by the ingester
unless its model keeps nothing, ``proxy.keep``; failures with status and code) and metrics, and an id: trailing
metadata ``x-prediction-id`` on ModelInfer, the ``prediction_id`` parameter of each streamed answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from tritonclient.grpc import service_pb2

from auth_api.authn import ANONYMOUS, Principal
from auth_api.core.errors import RateLimited, Unauthorized
from auth_api.core.metrics import OTHER
from auth_api.jobs.ownership import ensure_visible, may_use, shares_of
from auth_api.journal import new_prediction_id
from auth_api.proxy import grpc_tensors
from auth_api.proxy.empty_answer import diagnose_grpc
from auth_api.proxy.grpc_peek import answered_version, infer_model_name, infer_response_has_outputs
from auth_api.proxy.grpc_stream import StreamRelay, answer_status, grpc_failure, refusal_status
from auth_api.proxy.keep import keep_of
from auth_api.proxy.records import RAW_HEADER, base_record, failure_record, journal
from auth_api.proxy.tensors import check
from auth_api.state import Gateway
from mlstack.errors import MlstackError
from mlstack.grpc_targets import channel_target

logger = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
PUBLIC = {SERVICE + "ServerLive", SERVICE + "ServerReady"}
ADMIN_ONLY = {SERVICE + m for m in ("RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister",
                                    "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
                                    "TraceSetting", "LogSettings")}
ENGINEER_ONLY = {SERVICE + "ModelStatistics"}  # the same rule as GET /v2/models/{name}/stats
INFER = SERVICE + "ModelInfer"
HANDLER_CACHE_LIMIT = 256
# 1 GiB: Triton's own limit; the HTTP body limit does not apply to streamed tensors here.
MAX_MESSAGE = 1 << 30
_MD_KEY = RAW_HEADER.decode()


class _Proxy(grpc.GenericRpcHandler):
    def __init__(self, gw: Gateway, channel: aio.Channel):
        self.gw = gw
        self.channel = channel
        # One handler (and one upstream multicallable) per method, not one per call; bounded, as clients pick the names.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._counts: dict[tuple[str, str, str], Any] = {}  # gateway_grpc_requests_total children

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        handler = self._handlers.get(method)
        if handler is not None:
            return handler
        if not method.startswith(SERVICE):
            return None
        if method.endswith("/ModelStreamInfer"):
            handler = grpc.stream_stream_rpc_method_handler(self._stream(method))
        elif method == INFER:
            handler = grpc.unary_unary_rpc_method_handler(self._infer(method))
        else:
            handler = grpc.unary_unary_rpc_method_handler(self._unary(method))
        if len(self._handlers) < HANDLER_CACHE_LIMIT:
            self._handlers[method] = handler
        return handler

    def count(self, method: str, code: str, model: str = "") -> None:
        """gateway_grpc_requests_total{method, code, model} += 1, the model bounded like every model label ('other'
        unless the repository holds it). Children are cached (``labels`` costs more than ``inc``), not those of 'other'."""
        child = self._counts.get((method, code, model))
        if child is None:
            label = self.gw.metrics.model_label(model)
            child = self.gw.metrics.grpc_requests.labels(method, code, label)
            if label != OTHER and len(self._counts) < HANDLER_CACHE_LIMIT:
                self._counts[(method, code, model)] = child
        child.inc()

    async def _auth(self, method: str, context: aio.ServicerContext) -> tuple[Principal, list[tuple[str, Any]]]:
        auth = key = None
        forward = []
        for k, v in context.invocation_metadata() or ():  # one pass: this runs on every call
            if k == "authorization":
                auth = v if auth is None else auth
            elif k == "x-api-key":
                key = v if key is None else key
            elif k != "user-agent" and not k.startswith("grpc-"):
                forward.append((k, v))
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
            await self.gw.buckets.take(p.bucket if p is not ANONYMOUS else f"ip:{context.peer()}")
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
        if method in ENGINEER_ONLY and not p.at_least("engineer"):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "requires role 'engineer'")
        return p, forward

    def _check(self, request: bytes, p: Principal) -> tuple[str, str]:
        """(the request's id, its model); TensorRejected / ModelNotFound unless the ModelInferRequest fits its model's
        config."""
        req = grpc_tensors.parse(request)
        model = req.model_name
        ensure_visible(self.gw.extras, p, model)  # another user's model answers as a missing one
        spec = self.gw.catalog.spec(model, req.model_version or None)
        check(spec, grpc_tensors.sent_inputs(req), self.gw.settings.gateway_max_tensor_elements)
        return req.id, model

    def _infer(self, method: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        """ModelInfer: checked, forwarded, a prediction (history row, metrics, trailing ``x-prediction-id``)."""
        call = self.channel.unary_unary(method)
        name = method.removeprefix(SERVICE)

        async def handle(request: bytes, context: aio.ServicerContext) -> bytes:
            start = time.perf_counter()
            p, md = await self._auth(method, context)
            try:
                model = self._check(request, p)[1]
            except MlstackError as exc:
                self.count(name, refusal_status(exc).name, infer_model_name(request))
                self.record_failure(p, context, request, int(exc.status), str(exc.code), start, 0.0)
                await context.abort(refusal_status(exc), exc.message)
            up_start = time.perf_counter()
            try:
                resp: bytes = await call(request, metadata=md or None, timeout=context.time_remaining())
            except aio.AioRpcError as exc:
                self.count(name, exc.code().name, model)
                status, code = grpc_failure(exc.code())
                self.record_failure(p, context, request, status, code, start, time.perf_counter() - up_start)
                await context.abort(exc.code(), exc.details() or "upstream error")
            if not infer_response_has_outputs(resp):  # never an OK without outputs (Triton's cache stores errors so)
                err = diagnose_grpc(request)
                self.count(name, answer_status(err).name, model)
                self.record_failure(p, context, request, int(err.status), str(err.code), start, time.perf_counter() - up_start)
                await context.abort(answer_status(err), err.message)
            self.count(name, "OK", model)
            self.record(p, context, request, resp, start, up_start, model=model)
            return resp

        return handle

    def _unary(self, method: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        """Every other unary method: authorised, forwarded."""
        call = self.channel.unary_unary(method)
        name = method.removeprefix(SERVICE)
        named = _NAMED.get(name)

        async def handle(request: bytes, context: aio.ServicerContext) -> bytes:
            p, md = await self._auth(method, context)
            if named is not None:  # another user's model does not exist for this caller here either
                model = named.FromString(request).name
                if not may_use(p, model, shares_of(self.gw.extras)):
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{model[:64]}' not found")
            try:
                resp: bytes = await call(request, metadata=md or None, timeout=context.time_remaining())
            except aio.AioRpcError as exc:
                self.count(name, exc.code().name)
                await context.abort(exc.code(), exc.details() or "upstream error")
            self.count(name, "OK")
            return resp

        return handle

    def record(self, p: Principal, context: aio.ServicerContext, request: bytes, resp: bytes, start: float,
               up_start: float, *, model: str | None = None, protocol: str = "grpc", streamed: bool = False) -> str:
        """History row and latency of one answered inference (``resp``: a ModelInferResponse, or a
        ModelStreamInferResponse when ``streamed``); its prediction id (in the trailing metadata of a unary call)."""
        now = time.perf_counter()
        metrics = self.gw.metrics
        name = infer_model_name(request) if model is None else model
        metrics.observe_grpc_infer(name, now - start, now - up_start)
        if p.user_id is not None:  # Usage dashboard, as authorize() counts REST callers
            metrics.count_principal(p.kind, p.user_id)
        rec = base_record(p, model="", version=None, protocol=protocol, status=200, total_s=now - start,
                          upstream_s=now - up_start, client_ip=_peer_ip(context))
        pid = new_prediction_id()
        if keep_of(self.gw, "grpc").bare(name):  # a bare row: what the summary would have read off the bytes, cheaply
            rec["model"], rec["version"] = name[:64], answered_version(resp, streamed)
            journal(self.gw.journal, pid, rec)
        else:
            journal(self.gw.journal, pid, rec, ("grpc", request, resp, streamed))
        if not streamed:
            context.set_trailing_metadata(((_MD_KEY, pid),))
        return pid

    def record_failure(self, p: Principal, context: aio.ServicerContext, request: bytes, status: int, code: str,
                       start: float, upstream_s: float, *, streamed: bool = False) -> str:
        """History row of a refused or failed inference: status and error code, no outputs (no parse on this path)."""
        rec = failure_record(p, model=infer_model_name(request), version=None, protocol="grpc", status=status, code=code,
                             total_s=time.perf_counter() - start, upstream_s=upstream_s, client_ip=_peer_ip(context))
        pid = new_prediction_id()
        journal(self.gw.journal, pid, rec)
        if not streamed:
            context.set_trailing_metadata(((_MD_KEY, pid),))
        return pid

    def _stream(self, method: str) -> Callable[[AsyncIterator[bytes], aio.ServicerContext], AsyncIterator[bytes]]:
        async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
            p, md = await self._auth(method, context)
            async for resp in StreamRelay(self, method, p, md, context).run(requests):
                yield resp

        return handle


# Requests that name one model (field ``name``): answered as NOT_FOUND for a model the caller may not see.
_NAMED: dict[str, Any] = {"ModelMetadata": service_pb2.ModelMetadataRequest, "ModelReady": service_pb2.ModelReadyRequest,
                          "ModelConfig": service_pb2.ModelConfigRequest}


def _peer_ip(context: aio.ServicerContext) -> str:
    peer = context.peer() or ""
    return peer.split(":")[1] if peer.startswith("ipv4:") else peer[:64]


async def start_grpc(gw: Gateway, host: str, port: int) -> tuple[aio.Server, aio.Channel, int]:
    """Start the pass-through server; returns (server, upstream channel, bound port)."""
    # channelz (on by default) keeps per-call counters and timestamps that nothing here reads.
    opts = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.enable_channelz", 0)]
    target, lb_opts = channel_target(gw.settings.triton_grpc_targets)
    channel = aio.insecure_channel(target, options=opts + lb_opts)
    server = aio.server(options=opts)
    proxy = _Proxy(gw, channel)
    server.add_generic_rpc_handlers([proxy])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        await channel.close()
        raise RuntimeError(f"cannot bind the gateway gRPC port {host}:{port}")
    await server.start()
    logger.info("gateway gRPC listening on %s:%d -> %s", host, bound, target)
    return server, channel, bound
