"""``ModelStreamInfer`` relayed to Triton: each request checked before it is forwarded, each answer a prediction.

Answers are paired with their request by id (tritonclient's ``request_id``), else in order. Triton 2.51 answers every
request of the first stream to a model after it loads with "response output count mismatch" (unary calls and later
streams to the same model are fine, with or without the gateway); such an answer is retried once on a fresh one-request
stream, so clients never see the warm-up. An answer without outputs is never relayed as a success (``empty_answer``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from grpc import aio
from tritonclient.grpc import service_pb2

from auth_api.authn import Principal
from auth_api.proxy.empty_answer import diagnose_grpc
from auth_api.proxy.grpc_peek import infer_model_name
from mlstack.errors import MlstackError, ModelNotFound

logger = logging.getLogger(__name__)
METHOD = "ModelStreamInfer"
WARMUP_ERROR = "response output count mismatch"
PREDICTION_ID = "x-prediction-id"
PREDICTION_ID_PARAM = "prediction_id"
# gRPC status → the HTTP status a history row carries (the same words as the REST routes).
_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
         grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNIMPLEMENTED: 501,
         grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.PERMISSION_DENIED: 403}


class _Proxy(Protocol):
    gw: Any
    channel: aio.Channel

    def _check(self, request: bytes, p: Principal) -> tuple[str, str]: ...

    def count(self, method: str, code: str, model: str = "") -> None: ...

    def record(self, p: Principal, context: aio.ServicerContext, request: bytes, resp: bytes, start: float,
               up_start: float, *, model: str | None = None, protocol: str = "grpc", streamed: bool = False) -> str: ...

    def record_failure(self, p: Principal, context: aio.ServicerContext, request: bytes, status: int, code: str,
                       start: float, upstream_s: float, *, streamed: bool = False) -> str: ...


def refusal_status(exc: MlstackError) -> grpc.StatusCode:
    return grpc.StatusCode.NOT_FOUND if isinstance(exc, ModelNotFound) else grpc.StatusCode.INVALID_ARGUMENT


def answer_status(exc: MlstackError) -> grpc.StatusCode:
    """The status of a gateway error raised after Triton answered (``empty_answer``): the client's or the server's."""
    return grpc.StatusCode.INTERNAL if exc.status >= 500 else refusal_status(exc)


def grpc_failure(code: grpc.StatusCode) -> tuple[int, str]:
    """(HTTP-like status, error code) of an upstream gRPC failure, for history."""
    status = _HTTP.get(code, 500)
    return status, ("inference_rejected" if status < 500 else "inference_failed") if status != 404 else "model_not_found"


class StreamRelay:
    """One client stream: forwards checked requests, records and yields every answer."""

    def __init__(self, proxy: _Proxy, method: str, p: Principal, md: list[tuple[str, Any]], context: aio.ServicerContext):
        self.proxy, self.method, self.p, self.md, self.context = proxy, method, p, md, context
        self.pending: deque[tuple[str, bytes, float, str]] = deque()  # (request id, request, sent at, model)
        self.refused: list[MlstackError] = []

    async def _checked(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for request in requests:
            start = time.perf_counter()
            try:
                rid, model = self.proxy._check(request, self.p)
            except MlstackError as exc:
                # Stop forwarding: Triton answers what it already has, then the stream ends with the error.
                self.refused.append(exc)
                self.proxy.count(METHOD, refusal_status(exc).name, infer_model_name(request))
                pid = self.proxy.record_failure(self.p, self.context, request, int(exc.status), str(exc.code), start, 0.0)
                self.context.set_trailing_metadata(((PREDICTION_ID, pid),))  # the stream ends with this refusal
                return
            self.pending.append((rid, request, start, model))
            yield request

    async def run(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        call = self.proxy.channel.stream_stream(self.method)(self._checked(requests), metadata=self.md)
        try:
            async for resp in call:
                yield await self._answer(resp)
        except aio.AioRpcError as exc:
            if not self.refused:
                self.proxy.count(METHOD, exc.code().name)
                await self.context.abort(exc.code(), exc.details() or "upstream error")
        if self.refused:
            await self.context.abort(refusal_status(self.refused[0]), self.refused[0].message)

    def _take(self, rid: str) -> tuple[bytes, float, str] | None:
        if rid:
            for i, (pid, request, start, model) in enumerate(self.pending):
                if pid == rid:
                    del self.pending[i]
                    return request, start, model
        if self.pending:
            _, request, start, model = self.pending.popleft()
            return request, start, model
        return None

    async def _answer(self, resp: bytes) -> bytes:
        msg = service_pb2.ModelStreamInferResponse.FromString(resp)
        taken = self._take(msg.infer_response.id)
        if taken is None:  # more answers than requests (a decoupled model): passed through, not a prediction of its own
            return resp
        request, start, model = taken
        if msg.error_message == WARMUP_ERROR and (retried := await self._retry(request)) is not None:
            resp, msg = retried
        if not msg.error_message and not msg.infer_response.outputs:  # never an OK without outputs (see empty_answer)
            err = diagnose_grpc(request)
            msg.error_message = err.message
            self.proxy.count(METHOD, answer_status(err).name, model)
            pid = self.proxy.record_failure(self.p, self.context, request, int(err.status), str(err.code), start,
                                            time.perf_counter() - start, streamed=True)
        elif msg.error_message:
            self.proxy.count(METHOD, "INTERNAL", model)
            pid = self.proxy.record_failure(self.p, self.context, request, 500, "inference_failed", start,
                                            time.perf_counter() - start, streamed=True)
        else:
            self.proxy.count(METHOD, "OK", model)
            pid = self.proxy.record(self.p, self.context, request, resp, start, start, model=model, streamed=True)
        # Trailing metadata comes once per call, so each answer carries its own id in its parameters.
        msg.infer_response.parameters[PREDICTION_ID_PARAM].string_param = pid
        return msg.SerializeToString()

    async def _retry(self, request: bytes) -> tuple[bytes, Any] | None:
        """The answer to ``request`` on a fresh one-request stream, or None if that stream fails or warms up again."""
        async def one() -> AsyncIterator[bytes]:
            yield request

        try:
            async for resp in self.proxy.channel.stream_stream(self.method)(one(), metadata=self.md):
                msg = service_pb2.ModelStreamInferResponse.FromString(resp)
                if msg.error_message == WARMUP_ERROR:
                    return None
                # The fresh stream's answer is the real one, an error of the request's own (a NaN row) included.
                logger.info("Triton's first-stream error hidden for %s (answered on a fresh stream)",
                            msg.infer_response.model_name)
                return resp, msg
        except aio.AioRpcError as exc:
            logger.warning("retrying a streamed request after Triton's first-stream error failed: %s", exc.code().name)
        return None
