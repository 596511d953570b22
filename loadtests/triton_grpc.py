"""Locust: single-row infer over ``tritonclient.grpc`` (``--host 127.0.0.1:8001``), reported as Locust request events."""

from __future__ import annotations

import time

import grpc.experimental.gevent as grpc_gevent
import numpy as np
import tritonclient.grpc as grpcclient
from locust import User, constant, task

from loadtests.common import BATCH, MODEL, random_row

# gRPC's blocking calls must yield to gevent, or one user would stall all the others in this process.
grpc_gevent.init_gevent()


class TritonGrpcUser(User):
    """A closed-loop gRPC client; each call fires one ``request`` event with its latency or exception."""

    wait_time = constant(0)

    def on_start(self) -> None:
        host = (self.host or "127.0.0.1:8001").removeprefix("grpc://").removeprefix("http://")
        self.triton = grpcclient.InferenceServerClient(host)

    def on_stop(self) -> None:
        self.triton.close()

    @task
    def infer(self) -> None:
        x = np.array([random_row()] * BATCH, dtype=np.float32)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        start = time.perf_counter()
        exc: Exception | None = None
        length = 0
        try:
            result = self.triton.infer(MODEL, [inp])
            label = result.as_numpy("label")
            if label is None or label.shape[0] != BATCH:
                raise ValueError(f"expected {BATCH} label(s), got {None if label is None else label.shape}")
            length = result.get_response().ByteSize()
        except Exception as e:  # every failure becomes a Locust failure, never a crashed user
            exc = e
        self.environment.events.request.fire(request_type="grpc", name="v2 infer", response_time=(time.perf_counter() - start) * 1000,
                                             response_length=length, exception=exc, context={})


if __name__ == "__main__":
    from locust import run_single_user

    TritonGrpcUser.host = "127.0.0.1:8001"
    run_single_user(TritonGrpcUser)
