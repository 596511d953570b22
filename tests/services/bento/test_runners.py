"""Both runners — Triton over gRPC and in-process onnxruntime — give identical outputs, directly and through the service."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlstack.errors import ModelNotFound
from mlstack.repository import config as cfgmod
from mlstack.repository.layout import read_card
from mlstack.repository.publish import Candidate, publish
from services.bento.errors import RunnerUnavailable
from services.bento.runners import LocalRunner, TritonRunner, loaded_versions
from tests.fixtures.bento import BentoFixture
from tests.fixtures.triton import TritonFixture, free_ports
from tests.services.bento.helpers import render_digit
from training.digits_common import split

TABULAR = ["iris-rf", "iris-logreg", "iris-svm", "iris-knn", "diabetes-linear", "diabetes-rf", "battery-fault",
           "battery-anomaly"]


def _inputs(repo: Path, model: str) -> np.ndarray:
    if model.startswith("digits"):
        x = split()[1][:100]
        shape = read_card(repo, model, 1).inputs[0].shape[1:]
        return x.reshape(len(x), *shape)
    source = "battery-fault" if model == "battery-anomaly" else model
    bg = np.load(repo / source / "1" / "background.npy")
    return np.concatenate([bg, bg * np.float32(1.1)])  # 100 rows: more than max_batch_size (64)


def test_runners_give_identical_tensors(triton: TritonFixture) -> None:
    async def run() -> None:
        local, remote = LocalRunner(triton.repository), TritonRunner(triton.grpc, timeout_s=30)
        try:
            for model in [*TABULAR, "digits-cnn", "digits-keras"]:
                x = _inputs(triton.repository, model)
                a = await local.infer(model, {"input": x}, version=1)
                b = await remote.infer(model, {"input": x}, version=1)
                assert set(a) == set(b), model
                for k in a:
                    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (model, k, a[k].shape, b[k].shape)
                    if a[k].dtype.kind == "f":
                        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"{model}/{k}")
                    else:
                        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{model}/{k}")
            for runner in (local, remote):
                with pytest.raises(ModelNotFound):
                    await runner.infer("no-such-model", {"input": x})
        finally:
            await remote.close()

    asyncio.run(run())


def test_triton_runner_down_is_unavailable() -> None:
    async def run() -> None:
        (port,) = free_ports(1)
        runner = TritonRunner(f"127.0.0.1:{port}", timeout_s=2)
        assert not await runner.ready()
        with pytest.raises(RunnerUnavailable):
            await runner.infer("iris-rf", {"input": np.zeros((1, 4), np.float32)})
        await runner.close()

    asyncio.run(run())


def test_service_answers_alike_on_both_runners(bento: BentoFixture, bento_triton: BentoFixture) -> None:
    assert bento_triton.post("health").json()["runner"] == "triton"
    for model in TABULAR:
        names = read_card(bento.repository, model, 1).feature_names
        x = _inputs(bento.repository, model)[:10]
        recs = [{n: float(v) for n, v in zip(names, row, strict=True)} for row in x]
        req = {"model": model, "version": 1, "records": recs}
        a, b = bento.post("predict_records", req), bento_triton.post("predict_records", req)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json(), model
    img = render_digit(split()[1][3], invert=True)
    a, b = (s.post("classify_image", files={"image": ("d.png", img, "image/png")}, data={"version": "1"}) for s in (bento, bento_triton))
    assert a.json() == b.json()
    recs = [dict(zip(read_card(bento.repository, "diabetes-rf", 1).feature_names, map(float, _inputs(bento.repository, "diabetes-rf")[0]),
                     strict=True))]
    ea, eb = (s.post("explain", {"model": "diabetes-rf", "version": 1, "records": recs}).json() for s in (bento, bento_triton))
    ca, cb = ea["explanations"][0]["contributions"], eb["explanations"][0]["contributions"]
    assert ca.keys() == cb.keys() and all(abs(ca[k] - cb[k]) < 1e-6 for k in ca)


def test_local_runner_serves_the_version_triton_would(repo_copy: Path) -> None:
    """Latest version by default (version_policy latest 1); a pinned version on request; the policy is honoured."""
    card = read_card(repo_copy, "iris-logreg", 1)
    onnx_bytes = (repo_copy / "iris-logreg" / "1" / "model.onnx").read_bytes()
    publish(repo_copy, Candidate(name="iris-logreg", onnx_bytes=onnx_bytes, card=card, labels=card.labels,
                                 label_output="probabilities"))
    runner = LocalRunner(repo_copy)
    assert runner.resolve("iris-logreg", None)[1] == 2
    with pytest.raises(ModelNotFound):  # latest{num_versions: 1}: version 1 is no longer loaded, as in Triton
        runner.resolve("iris-logreg", 1)
    cfg = cfgmod.read_config(repo_copy / "iris-logreg" / "config.pbtxt")
    cfg.version_policy.specific.versions.extend([1])
    assert loaded_versions(cfg, [1, 2]) == [1]
    cfg.version_policy.all.SetInParent()
    assert loaded_versions(cfg, [1, 2]) == [1, 2]
    (repo_copy / "iris-logreg" / "config.pbtxt").write_text(cfgmod.dumps(cfg))
    assert runner.resolve("iris-logreg", 1)[1] == 1
    out = runner.infer_sync("iris-logreg", {"input": np.ones((3, 4), np.float32)})
    assert out["label"].shape == (3, 1) and out["probabilities"].shape == (3, 3)
    shutil.rmtree(repo_copy / "iris-logreg" / "2")
    assert runner.resolve("iris-logreg", None)[1] == 1
