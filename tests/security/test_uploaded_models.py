"""Attack suite: uploaded models cannot read the server's files, hang or exhaust the publisher, or break serving.

Also pins guarantees that already held: path traversal in model names, decompression bombs.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from mlstack.errors import PublishError
from mlstack.repository.card import Dataset, ModelCard
from mlstack.repository.layout import versions
from mlstack.repository.publish import Candidate, load_onnx, publish
from mlstack.repository.sandbox import SandboxLimits, smoke_run
from services.triton.launcher import TritonServer
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import triton_settings
from tests.services.bento.helpers import png

SECRET = np.arange(12, dtype=np.float32) * 7.0  # 48 bytes standing in for the JWT signing key


def _external(t: TensorProto, location: str, length: int = 48) -> TensorProto:
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _weights(location: str | None) -> TensorProto:
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32).tobytes(), raw=True)
    return _external(w, location) if location else w


def _model(nodes: list[onnx.NodeProto], inits: list[TensorProto], functions: list[onnx.FunctionProto] | None = None) -> bytes:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 3])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("custom", 1)] if functions else [])
    return helper.make_model(g, opset_imports=opsets, functions=functions or []).SerializeToString()


def matmul_model(location: str | None = None) -> bytes:
    """value = input @ W, with W read from ``location`` when given (a valid model either way)."""
    return _model([helper.make_node("MatMul", ["input", "W"], ["value"])], [_weights(location)])


def constant_model(location: str) -> bytes:
    return _model([helper.make_node("Constant", [], ["W"], value=_weights(location)),
                   helper.make_node("MatMul", ["input", "W"], ["value"])], [])


def subgraph_model(location: str) -> bytes:
    """The external tensor hides in the then-branch of an If node."""
    def branch(name: str, t: TensorProto) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Constant", [], [name], value=t)], name, [],
                                 [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 3])])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nodes = [helper.make_node("If", ["cond"], ["W"], then_branch=branch("a", _weights(location)),
                              else_branch=branch("b", _weights(None))),
             helper.make_node("MatMul", ["input", "W"], ["value"])]
    return _model(nodes, [cond])


def function_model(location: str) -> bytes:
    fn = helper.make_function("custom", "Weigh", ["x"], ["y"],
                              [helper.make_node("Constant", [], ["w"], value=_weights(location)),
                               helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_opsetid("", 17)])
    return _model([helper.make_node("Weigh", ["input"], ["value"], domain="custom")], [], [fn])


def sparse_model(location: str) -> bytes:
    values = _external(helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]), location, 4)
    sparse = helper.make_sparse_tensor(values, helper.make_tensor("i", TensorProto.INT64, [1], [0]), [4, 3])
    return _model([helper.make_node("Constant", [], ["W"], sparse_value=sparse),
                   helper.make_node("MatMul", ["input", "W"], ["value"])], [])


def _card(name: str) -> ModelCard:
    return ModelCard(name=name, task="regression", framework="external", algorithm="unknown",
                     dataset=Dataset(name="unknown", source="external"))


@pytest.fixture
def secret_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The publisher's working directory holds ``var/jwt.key`` (as the gateway's does)."""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "jwt.key").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def gateway_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    """A gateway (SQLite, no Triton needed to publish) and an engineer's token."""
    tmp = tmp_path_factory.mktemp("uploads")
    with run_gateway(gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", repository=tmp / "repo" / "model_repository")) as gw:
        yield gw, gw.create_user("engineer1", role="engineer")


def _upload(gw: RunningGateway, token: str, name: str, data: bytes) -> httpx.Response:
    with gw.client(token) as c:
        return c.post(f"/api/v1/models/{name}/versions", files={"file": ("model.onnx", data, "application/octet-stream")})


# ---- item 3: external data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [matmul_model, constant_model, subgraph_model, function_model, sparse_model])
@pytest.mark.parametrize("location", ["var/jwt.key", "/etc/passwd", "../../var/jwt.key"])
def test_external_data_anywhere_is_refused(build, location: str, secret_cwd: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(PublishError) as err:
        publish(repo, Candidate(name="stealer", onnx_bytes=build(location), card=_card("stealer")))
    assert err.value.code == "external_data_refused" and err.value.status in (400, 422)
    assert "jwt" not in str(err.value.to_body()) and "passwd" not in str(err.value.to_body())
    assert versions(repo, "stealer") == []


def test_upload_pointing_at_the_signing_key_is_refused_without_reading_it(gateway_repo, secret_cwd: Path) -> None:
    gw, token = gateway_repo
    r = _upload(gw, token, "stealer", matmul_model("var/jwt.key"))
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"] == "external_data_refused"
    assert "jwt.key" not in r.text and str(secret_cwd) not in r.text
    assert versions(gw.settings.repository, "stealer") == []
    # The same model, self-contained, is accepted: only the file reference was refused.
    assert _upload(gw, token, "stealer", matmul_model()).status_code == 201


def test_cli_publish_refuses_external_data(secret_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mlstack.cli import app
    from mlstack.settings import get_settings

    repo = secret_cwd / "repo"
    monkeypatch.setenv("MLSTACK_REPOSITORY", str(repo))
    monkeypatch.setenv("MLSTACK_VAR_DIR", str(secret_cwd / "var"))
    get_settings.cache_clear()
    try:
        (secret_cwd / "stealer.onnx").write_bytes(matmul_model("var/jwt.key"))
        res = CliRunner().invoke(app, ["publish", "stealer.onnx", "--name", "stealer"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 2 and "external_data_refused" in res.output, res.output
    assert versions(repo, "stealer") == []


def test_errors_do_not_reveal_whether_a_path_exists(gateway_repo, secret_cwd: Path) -> None:
    gw, token = gateway_repo
    bodies = [_upload(gw, token, "probe", build(loc)).json() for build in (matmul_model, constant_model)
              for loc in ("var/jwt.key", "var/nothing-here.key", "/etc/passwd", "/etc/nothing-here")]
    assert all(b == bodies[0] for b in bodies), bodies


def test_checker_and_runtime_messages_carry_no_paths(gateway_repo) -> None:
    gw, token = gateway_repo
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["input", "missing_weights"], ["value"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 3])]), opset_imports=[helper.make_opsetid("", 17)])
    for data in (bad.SerializeToString(), b"\x08\x07garbage" * 10):
        r = _upload(gw, token, "broken", data)
        assert r.status_code == 422, r.text
        text = r.text
        for leak in (str(gw.settings.repository), "/tmp/", "mlstack-smoke", os.getcwd()):
            assert leak not in text, text


def test_sandbox_cannot_read_the_publishers_files_even_if_a_check_is_missed(secret_cwd: Path) -> None:
    # Bypass the refusal and hand the smoke run a model that reads var/jwt.key relative to its cwd.
    data = matmul_model("var/jwt.key")
    model = onnx.load_from_string(matmul_model())
    from mlstack.repository import config as cfgmod

    cfg = cfgmod.config_from_onnx(model, "stealer", max_batch_size=8)
    with pytest.raises(PublishError) as err:
        smoke_run(data, cfg)
    assert err.value.code == "smoke_failed"
    assert str(secret_cwd) not in str(err.value.to_body()) and "mlstack-smoke" not in str(err.value.to_body())


def _loop_model(trip_count: int) -> bytes:
    """value = input + trip_count (one Add per iteration): CPU time grows with the trip count."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.FLOAT, [], [1.0])),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "input"], ["value"], body=body)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor("M", TensorProto.INT64, [], [trip_count]), helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_model_that_never_finishes_is_refused_in_bounded_time(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PublishError) as err:
        publish(tmp_path / "repo", Candidate(name="spinner", onnx_bytes=_loop_model(10**12), card=_card("spinner")),
                sandbox=SandboxLimits(timeout_s=3, cpu_seconds=3))
    assert err.value.code in ("smoke_timeout", "smoke_failed")
    assert time.monotonic() - started < 15
    assert versions(tmp_path / "repo", "spinner") == []


def test_a_model_that_allocates_without_bound_is_refused(tmp_path: Path) -> None:
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [1 << 36])  # 256 GiB of float32
    g = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])),
         helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
         helper.make_node("Add", ["input", "s"], ["value"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 4])], [shape])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(PublishError) as err:
        publish(tmp_path / "repo", Candidate(name="hog", onnx_bytes=data, card=_card("hog")),
                sandbox=SandboxLimits(memory_bytes=1024**3, timeout_s=30, cpu_seconds=30))
    assert err.value.code == "smoke_failed"
    assert versions(tmp_path / "repo", "hog") == []


def test_self_contained_models_still_publish(tmp_path: Path) -> None:
    pub = publish(tmp_path / "repo", Candidate(name="plain", onnx_bytes=matmul_model(), card=_card("plain")))
    assert pub.version == 1 and load_onnx(matmul_model()).graph.initializer[0].name == "W"


# ---- already held: path traversal in model names -----------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../x", "..", "/tmp/x", "a/../../x", "X", ".hidden", "x" * 70])
def test_traversal_names_are_refused_by_publish(name: str, tmp_path: Path) -> None:
    repo = tmp_path / "a" / "repo"
    repo.mkdir(parents=True)
    with pytest.raises(PublishError) as err:
        publish(repo, Candidate(name=name, onnx_bytes=matmul_model(), card=_card("x")))
    assert err.value.code == "invalid_model_name"
    assert _tree(tmp_path) == {"a", "a/repo"}


@pytest.mark.parametrize("path", ["..%2Fx", "%2e%2e", "%2e%2e%2fescaped", "%2Ftmp%2Fescaped", "..%5Cx", "escaped%00"])
def test_traversal_names_are_refused_by_the_api(path: str, gateway_repo) -> None:
    gw, token = gateway_repo
    parent = gw.settings.repository.parent
    before = _tree(parent.parent)
    r = _upload(gw, token, path, matmul_model())
    assert 400 <= r.status_code < 500, r.text
    assert _tree(parent.parent) == before
    assert not Path("/tmp/escaped").exists()


# ---- item 4: a broken model never stops the others, the stack, or readiness -------------------------------------


def test_broken_model_does_not_stop_triton_or_readiness(trained_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    repo.mkdir()
    for name in ("iris-logreg", "diabetes-linear"):
        shutil.copytree(trained_repo / name, repo / name)
    # Bypassing publish, as a hand copy or a model from an older release would.
    (repo / "diabetes-linear" / "1" / "model.onnx").write_bytes(b"\x08\x07 not an onnx graph")
    settings = triton_settings(repo, tmp_path / "var")
    server = TritonServer(settings)
    server.start(timeout=120)
    try:
        assert [(m["name"], m["version"]) for m in server.failed_models()] == [("diabetes-linear", "1")]
        x = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
        r = httpx.post(f"{server.http_url}/v2/models/iris-logreg/infer", json=x, timeout=10)
        assert r.status_code == 200, r.text
        gws = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", repository=repo,
                               triton_host=settings.triton_host, triton_http_port=settings.triton_http_port,
                               triton_grpc_port=settings.triton_grpc_port)
        seen: set[str] = set()
        with run_gateway(gws) as gw, gw.client() as c:
            # Triton retries a broken model at every poll: whatever phase it is in, the gateway stays ready.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not ({"broken", "loading"} <= seen):
                ready = c.get("/health/ready")
                assert ready.status_code == 200, ready.text
                body = ready.json()
                assert body["status"] == "ready" and body["models"]["iris-logreg"]["state"] == "ready"
                model = body["models"]["diabetes-linear"]
                seen.add(model["state"])
                if model["state"] == "broken":
                    assert body["broken"] == ["diabetes-linear"]
                    assert "Protobuf" in model["reason"] and str(repo) not in model["reason"] and "/tmp/" not in model["reason"]
                time.sleep(0.1)
        assert "broken" in seen, seen
    finally:
        server.stop()


# ---- already held: decompression bombs ----------------------------------------------------------------------------


def test_png_decompression_bomb_is_refused(bento_triton: BentoFixture) -> None:
    bomb = png(Image.new("1", (12000, 12000)))
    assert len(bomb) < 100_000
    started = time.monotonic()
    r = bento_triton.post("classify_image", files={"image": ("bomb.png", bomb, "image/png")})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] in ("decompression_bomb", "image_too_large")
    assert time.monotonic() - started < 5
