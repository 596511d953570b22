"""Every demo model answers stock tritonclient (HTTP JSON, HTTP binary, gRPC) exactly like onnxruntime in-process."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from mlstack.repository import config as cfgmod
from tests.fixtures.triton import TritonFixture
from tests.services.triton.helpers import DEMO_MODELS, assert_same, model_config, reference, rows_for


def _http(triton: TritonFixture, name: str, feeds: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
    cfg = model_config(triton.repository, name)
    client = httpclient.InferenceServerClient(triton.http)
    try:
        inputs = []
        for t in cfg.input:
            inp = httpclient.InferInput(t.name, list(feeds[t.name].shape), cfgmod.dtype_name(t.data_type))
            inp.set_data_from_numpy(feeds[t.name], binary_data=binary)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput(t.name, binary_data=binary) for t in cfg.output]
        result = client.infer(name, inputs, outputs=outputs)
        return {t.name: result.as_numpy(t.name) for t in cfg.output}
    finally:
        client.close()


def _grpc(triton: TritonFixture, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cfg = model_config(triton.repository, name)
    client = grpcclient.InferenceServerClient(triton.grpc)
    try:
        inputs = []
        for t in cfg.input:
            inp = grpcclient.InferInput(t.name, list(feeds[t.name].shape), cfgmod.dtype_name(t.data_type))
            inp.set_data_from_numpy(feeds[t.name])
            inputs.append(inp)
        result = client.infer(name, inputs, outputs=[grpcclient.InferRequestedOutput(t.name) for t in cfg.output])
        return {t.name: result.as_numpy(t.name) for t in cfg.output}
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_model_matches_onnxruntime(triton: TritonFixture, name: str) -> None:
    assert (triton.repository / name / "config.pbtxt").is_file(), f"demo model {name} is missing from the trained repository"
    feeds = rows_for(triton.repository, name, n=5, seed=hash(name) % 1000)
    want = reference(triton.repository, name, feeds)
    assert_same(f"{name} http/json", _http(triton, name, feeds, binary=False), want)
    assert_same(f"{name} http/binary", _http(triton, name, feeds, binary=True), want)
    assert_same(f"{name} grpc", _grpc(triton, name, feeds), want)


@pytest.mark.slow
def test_every_demo_model_is_ready_with_its_version(triton: TritonFixture) -> None:
    state = triton.server.health()
    assert state["live"] and state["ready"]
    ready = {m["name"]: m["version"] for m in state["models"] if m["state"] == "READY"}
    for name in DEMO_MODELS:
        assert ready.get(name) == "1", f"{name} not ready as version 1: {state['models']}"


@pytest.mark.slow
def test_classification_top_k_with_labels(triton: TritonFixture) -> None:
    """class_count=k returns 'score:index:label' for the k most probable classes, from labels.txt."""
    name = "iris-logreg"
    labels = (triton.repository / name / "labels.txt").read_text().split()
    feeds = rows_for(triton.repository, name, n=4, seed=7)
    probs = reference(triton.repository, name, feeds)["probabilities"]
    client = grpcclient.InferenceServerClient(triton.grpc)
    try:
        inp = grpcclient.InferInput("input", list(feeds["input"].shape), "FP32")
        inp.set_data_from_numpy(feeds["input"])
        out = grpcclient.InferRequestedOutput("probabilities", class_count=2)
        top = client.infer(name, [inp], outputs=[out]).as_numpy("probabilities")
    finally:
        client.close()
    assert top.shape == (4, 2)
    for row, entries in zip(probs, top, strict=True):
        order = np.argsort(-row)[:2]
        for k, entry in enumerate(entries):
            score, index, label = entry.decode().split(":")
            assert int(index) == order[k] and label == labels[order[k]]
            assert abs(float(score) - row[order[k]]) < 1e-5
