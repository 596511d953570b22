"""Dynamic batching, the response cache and hot reload, observed through Triton's own metrics and responses."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mlstack.repository.layout import read_card
from mlstack.repository.publish import Candidate, publish
from tests.fixtures.clones import clone_model, wait_ready
from tests.fixtures.triton import TritonFixture

LOAD_BUDGET_S = 3.0


def _infer(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray) -> grpcclient.InferResult:
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp])


def _rows(seed: int, n: int = 1, width: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


@pytest.mark.slow
def test_dynamic_batching_batches_concurrent_requests(triton: TritonFixture) -> None:
    model = "iris-logreg"
    count0 = triton.metric("nv_inference_count", model)
    exec0 = triton.metric("nv_inference_exec_count", model)

    def worker(w: int) -> int:
        client = grpcclient.InferenceServerClient(triton.grpc)
        try:
            for i in range(25):  # distinct rows: no cache hits
                _infer(client, model, _rows(10_000 + w * 100 + i))
            return 25
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        sent = sum(pool.map(worker, range(16)))
    inferences = triton.metric("nv_inference_count", model) - count0
    executions = triton.metric("nv_inference_exec_count", model) - exec0
    assert inferences == sent
    assert executions < inferences, f"no batching: {executions} executions for {inferences} inferences"


@pytest.mark.slow
def test_repeated_request_is_a_cache_hit(triton: TritonFixture) -> None:
    model = "iris-logreg-rcache-hit"  # Triton's response cache is opt-in per model (off in newly written configs)
    clone_model(triton.repository, "iris-logreg", model, response_cache=True)
    wait_ready(triton.server.http_url, model)
    x = _rows(424242)
    client = grpcclient.InferenceServerClient(triton.grpc)
    try:
        first = _infer(client, model, x).as_numpy("probabilities")
        hits0 = triton.metric("nv_cache_num_hits_per_model", model)
        second = _infer(client, model, x).as_numpy("probabilities")
    finally:
        client.close()
    np.testing.assert_array_equal(first, second)
    assert triton.metric("nv_cache_num_hits_per_model", model) == hits0 + 1


@pytest.mark.slow
def test_hot_reload_under_traffic_has_no_failed_request(triton: TritonFixture) -> None:
    """Publish version 2 while 8 clients send requests: nothing fails, v2 serves within two poll intervals."""
    repo, model = triton.repository, "reload-probe"
    src = "iris-logreg"
    onnx_bytes = (repo / src / "1" / "model.onnx").read_bytes()
    labels = (repo / src / "labels.txt").read_text().split()
    card = read_card(repo, src, 1)

    def cand() -> Candidate:
        return Candidate(name=model, onnx_bytes=onnx_bytes, card=card.model_copy(deep=True), labels=labels,
                         label_output="probabilities")

    publish(repo, cand(), max_batch_size=64, instance_count=1, max_queue_delay_us=500)
    deadline = time.monotonic() + 60
    probe = grpcclient.InferenceServerClient(triton.grpc)
    while not probe.is_model_ready(model):
        assert time.monotonic() < deadline, "a newly published model was not loaded by polling within 60 s"
        time.sleep(0.2)

    stop = threading.Event()
    failures: list[str] = []
    versions_seen: list[set[str]] = []

    def client_loop(w: int) -> int:
        client = grpcclient.InferenceServerClient(triton.grpc)
        seen: set[str] = set()
        n = 0
        try:
            while not stop.is_set():
                try:
                    result = _infer(client, model, _rows(w * 1_000_000 + n))
                    seen.add(result.get_response().model_version)
                except Exception as exc:
                    failures.append(repr(exc))
                n += 1
        finally:
            versions_seen.append(seen)
            client.close()
        return n

    interval = triton.settings.triton_poll_interval_s
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop, w) for w in range(8)]
        time.sleep(1.0)
        publish(repo, cand(), max_batch_size=64, instance_count=1, max_queue_delay_us=500)
        published = time.monotonic()
        served_v2 = None
        while time.monotonic() - published < 30:
            if probe.infer(model, [_input(_rows(99))]).get_response().model_version == "2":
                served_v2 = time.monotonic() - published
                break
            time.sleep(0.05)
        time.sleep(1.0)  # keep traffic on across v1's unload
        stop.set()
        total = sum(f.result() for f in futures)
    probe.close()
    assert not failures, f"{len(failures)} of {total} requests failed during the reload: {failures[:3]}"
    assert served_v2 is not None, "version 2 never served"
    # Two poll intervals to notice it, plus the load itself (stub start, onnxruntime session, warmup: ~2 s on 2 busy cores).
    assert served_v2 <= 2 * interval + LOAD_BUDGET_S, f"version 2 served {served_v2:.1f}s after publish (poll interval {interval}s)"
    assert any("2" in s for s in versions_seen)


def _input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp
