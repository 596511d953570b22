"""Attack suite: declared tensor shapes are bounded by the model's config before Triton sees them.

A ~100-byte request declaring 1e9 rows made Triton allocate ~20 GB and get OOM-killed. Through the gateway it is now
a fast 400 on every transport (HTTP JSON, binary extension, gzip, gRPC unary and stream, REST predict), Triton's memory
does not move and it keeps serving; each other lie (rank, dims, datatype, element count, BYTES lengths, unknown or
missing input, batch, element cap) is a 400 naming the input and the reason, answered by the gateway ("code" is the
gateway's; Triton's own errors have none); valid requests of every shape still pass.
"""

from __future__ import annotations

import gzip
import json
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from auth_api.catalog import Catalog
from auth_api.proxy.tensors import TensorRejected, check_http, spec_from_config
from mlstack.repository.config import loads
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

MODEL = "iris-logreg"  # input "input": FP32 [-1, 4], max_batch_size 64
ROW = [5.1, 3.5, 1.4, 0.2]
HUGE = [1_000_000_000, 4]


def _inp(shape: list[int], data: Any, name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# ---- the validator against real config.pbtxt text (no server needed) -------------------------------------------

BYTES_CONFIG = """
name: "text"
max_batch_size: 8
input { name: "text" data_type: TYPE_STRING dims: [ 1 ] }
input { name: "lengths" data_type: TYPE_INT32 dims: [ -1 ] optional: true }
output { name: "out" data_type: TYPE_FP32 dims: [ 1 ] }
"""
NOBATCH_CONFIG = """
name: "image"
max_batch_size: 0
input { name: "pixels" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }
output { name: "out" data_type: TYPE_FP32 dims: [ 1 ] }
"""


def _binary_body(inputs: list[tuple[dict[str, Any], bytes]]) -> tuple[bytes, int]:
    head = json.dumps({"inputs": [dict(meta, parameters={"binary_data_size": len(raw)}) for meta, raw in inputs]}).encode()
    return head + b"".join(raw for _, raw in inputs), len(head)


def _strings(*items: bytes) -> bytes:
    return b"".join(len(s).to_bytes(4, "little") + s for s in items)


def _rejected(spec: Any, body: bytes, hlen: int | None = None, cap: int = 1 << 24) -> TensorRejected:
    with pytest.raises(TensorRejected) as info:
        check_http(spec, body, hlen, cap)
    return info.value


def test_bytes_tensors_length_prefixes_must_match_the_bytes_sent() -> None:
    spec = spec_from_config(loads(BYTES_CONFIG))
    meta = {"name": "text", "shape": [2, 1], "datatype": "BYTES"}
    body, hlen = _binary_body([(meta, _strings(b"hello", b"world"))])
    check_http(spec, body, hlen, 1 << 24)  # honest
    lie = _strings(b"hello") + (1 << 30).to_bytes(4, "little") + b"world"  # claims a 1 GiB string
    body, hlen = _binary_body([(meta, lie)])
    err = _rejected(spec, body, hlen)
    assert err.code == "invalid_bytes_tensor" and "input 'text'" in err.message
    body, hlen = _binary_body([(meta, _strings(b"a", b"b") + b"\x01\x00")])  # trailing bytes inside a prefix
    assert _rejected(spec, body, hlen).code == "invalid_bytes_tensor"
    body, hlen = _binary_body([(meta, _strings(b"a", b"b", b"c"))])  # 3 strings for 2 declared
    err = _rejected(spec, body, hlen)
    assert err.code == "element_count_mismatch" and "sends 3" in err.message


def test_json_nested_thousands_deep_is_a_400_not_a_crash() -> None:
    spec = spec_from_config(loads(BYTES_CONFIG))
    deep = b'{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    assert _rejected(spec, deep).code == "invalid_request"


def test_wildcard_dims_are_bounded_by_the_element_cap_and_only_where_the_config_has_them() -> None:
    spec = spec_from_config(loads(NOBATCH_CONFIG))
    ok = json.dumps({"inputs": [_inp([2, 2, 3], [0] * 12, "pixels", "UINT8")]}).encode()
    check_http(spec, ok, None, 100)
    huge = json.dumps({"inputs": [_inp([100_000, 100_000, 3], [0] * 12, "pixels", "UINT8")]}).encode()
    err = _rejected(spec, huge, cap=100)
    assert err.code == "too_many_elements" and "input 'pixels'" in err.message
    wrong = json.dumps({"inputs": [_inp([2, 2, 4], [0] * 16, "pixels", "UINT8")]}).encode()
    assert _rejected(spec, wrong).code == "shape_mismatch"  # the last dim is fixed at 3
    batched = json.dumps({"inputs": [_inp([1, 2, 2, 3], [0] * 12, "pixels", "UINT8")]}).encode()
    assert _rejected(spec, batched).code == "rank_mismatch"  # max_batch_size 0: no batch dimension
    # optional inputs may be left out; required ones may not
    text = spec_from_config(loads(BYTES_CONFIG))
    only_optional = json.dumps({"inputs": [_inp([1, 3], [1, 2, 3], "lengths", "INT32")]}).encode()
    err = _rejected(text, only_optional)
    assert err.code == "missing_input" and "'text'" in err.message


def test_triton_listens_on_loopback_by_default() -> None:
    """Direct Triton access is for trusted networks: by default all three of its ports bind 127.0.0.1."""
    from mlstack.settings import Settings
    from services.triton.launcher import TritonServer

    assert Settings.model_fields["triton_host"].default == "127.0.0.1"
    argv = TritonServer(Settings(triton_host="127.0.0.1")).command()
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(argv)


def test_the_catalog_rereads_a_config_when_it_changes(tmp_path: Path) -> None:
    model = tmp_path / "image"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(NOBATCH_CONFIG)
    catalog = Catalog(tmp_path)
    assert catalog.spec("image").inputs["pixels"].dims == (-1, -1, 3)
    (model / "config.pbtxt").write_text(NOBATCH_CONFIG.replace("dims: [ -1, -1, 3 ]", "dims: [ 8, 8, 3 ]"))
    (model / "2").mkdir()
    catalog.invalidate("image")  # what the registry does on publish; otherwise within the cache's TTL
    assert catalog.spec("image").inputs["pixels"].dims == (8, 8, 3)
    assert catalog.spec("image", "2").name == "image"
    with pytest.raises(Exception, match="version 3 not found"):
        catalog.spec("image", "3")


# ---- through a real gateway in front of the real Triton ---------------------------------------------------------


slow = pytest.mark.slow  # the tests below serve real models


@pytest.fixture(scope="module")
def tgw(triton: TritonFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    """A gateway (SQLite) in front of the session's Triton and a user's token."""
    tmp = tmp_path_factory.mktemp("tensor_bounds")
    with run_gateway(gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", triton=triton)) as gw:
        yield gw, gw.create_user("tensor_user")


def _triton_rss(triton: TritonFixture) -> int:
    """Resident bytes of tritonserver and its backend stubs."""
    assert triton.server.process is not None
    proc = psutil.Process(triton.server.process.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def _forwarded(gw: RunningGateway, model: str = MODEL) -> float:
    """How many v2 HTTP calls for ``model`` the gateway has sent to Triton (its upstream latency histogram)."""
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    pattern = 'gateway_upstream_duration_seconds_count{model="' + model + '",protocol="http"} '
    m = re.search(re.escape(pattern) + r"([0-9.e+]+)", text)
    return float(m.group(1)) if m else 0.0


def _post(gw: RunningGateway, token: str, body: bytes, headers: dict[str, str] | None = None,
          path: str = f"/v2/models/{MODEL}/infer") -> httpx.Response:
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
    return httpx.post(gw.url + path, content=body, headers=h, timeout=30)


def _grpc_request(shape: list[int], raw: bytes, name: str = "input", datatype: str = "FP32", model: str = MODEL) -> Any:
    req = service_pb2.ModelInferRequest(model_name=model)
    t = req.inputs.add()
    t.name, t.datatype = name, datatype
    t.shape.extend(shape)
    req.raw_input_contents.append(raw)
    return req


def _grpc_stub(gw: RunningGateway) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(gw.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _assert_gateway_400(r: httpx.Response, code: str, *words: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == code, body  # the gateway's answer: Triton's errors carry no code
    assert isinstance(body["error"], str) and all(w in body["error"] for w in words), body


@slow
def test_a_billion_declared_rows_never_reach_triton_on_any_transport(tgw: tuple[RunningGateway, str], triton: TritonFixture) -> None:
    gw, token = tgw
    rss_before = _triton_rss(triton)
    forwarded = _forwarded(gw)
    attack = json.dumps({"inputs": [_inp(HUGE, ROW)]}).encode()
    binary, hlen = _binary_body([({"name": "input", "shape": HUGE, "datatype": "FP32"}, np.array(ROW, np.float32).tobytes())])
    variants = {
        "json": (attack, {}),
        "binary": (binary, {"Inference-Header-Content-Length": str(hlen)}),
        "gzip": (gzip.compress(attack), {"Content-Encoding": "gzip"}),
        "deflate": (zlib.compress(binary), {"Content-Encoding": "deflate", "Inference-Header-Content-Length": str(hlen)}),
    }
    for what, (body, headers) in variants.items():
        start = time.perf_counter()
        r = _post(gw, token, body, headers)
        assert time.perf_counter() - start < 2.0, what
        _assert_gateway_400(r, "batch_too_large", "input 'input'", "1000000000", "64")
    md = [("authorization", f"Bearer {token}")]
    channel, stub = _grpc_stub(gw)
    try:
        req = _grpc_request(HUGE, np.array(ROW, np.float32).tobytes())
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as unary:
            stub.ModelInfer(req, metadata=md, timeout=10)
        assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'input'" in (unary.value.details() or "")
        with pytest.raises(grpc.RpcError) as stream:
            list(stub.ModelStreamInfer(iter([req]), metadata=md, timeout=10))
        assert stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1000000000" in (stream.value.details() or "")
        assert time.perf_counter() - start < 4.0
    finally:
        channel.close()
    assert _forwarded(gw) == forwarded
    assert _triton_rss(triton) - rss_before < 64 << 20
    r = _post(gw, token, json.dumps({"inputs": [_inp([1, 4], ROW)]}).encode())  # and Triton keeps serving
    assert r.status_code == 200 and r.json()["outputs"]


BAD_JSON = [
    ("rank", [_inp([4], ROW)], "rank_mismatch", ["input 'input'", "rank"]),
    ("dims", [_inp([1, 5], [*ROW, 1.0])], "shape_mismatch", ["input 'input'", "[1, 5]"]),
    ("datatype", [_inp([1, 4], ROW, datatype="FP64")], "datatype_mismatch", ["input 'input'", "FP64", "FP32"]),
    ("too_few_values", [_inp([2, 4], ROW)], "element_count_mismatch", ["input 'input'", "8 elements", "sends 4"]),
    ("too_many_values", [_inp([1, 4], ROW * 2)], "element_count_mismatch", ["input 'input'", "sends 8"]),
    ("nested_lie", [_inp([2, 4], [ROW])], "element_count_mismatch", ["sends 4"]),
    ("unknown_input", [_inp([1, 4], ROW), _inp([1, 1], [1.0], name="extra")], "unknown_input", ["input 'extra'"]),
    ("missing_input", [], "missing_input", ["input 'input'", "required"]),
    ("batch", [_inp([65, 4], ROW * 65)], "batch_too_large", ["input 'input'", "65", "64"]),
    ("empty_batch", [_inp([0, 4], [])], "empty_batch", ["input 'input'"]),
    ("negative_dim", [_inp([-1, 4], ROW)], "invalid_shape", ["input 0"]),
    ("duplicate", [_inp([1, 4], ROW), _inp([1, 4], ROW)], "duplicate_input", ["input 'input'"]),
]


@slow
@pytest.mark.parametrize(("case", "inputs", "code", "words"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_each_lie_is_a_400_naming_the_input_and_the_reason(tgw: tuple[RunningGateway, str], case: str, inputs: list[Any],
                                                           code: str, words: list[str]) -> None:
    gw, token = tgw
    forwarded = _forwarded(gw)
    _assert_gateway_400(_post(gw, token, json.dumps({"inputs": inputs}).encode()), code, *words)
    assert _forwarded(gw) == forwarded


@slow
def test_binary_extension_lies(tgw: tuple[RunningGateway, str]) -> None:
    gw, token = tgw
    meta = {"name": "input", "shape": [2, 4], "datatype": "FP32"}
    body, hlen = _binary_body([(meta, np.zeros(4, np.float32).tobytes())])  # 2x4 declared, 4 floats sent
    _assert_gateway_400(_post(gw, token, body, {"Inference-Header-Content-Length": str(hlen)}), "element_count_mismatch",
                        "input 'input'", "sends 4")
    body, hlen = _binary_body([(dict(meta, shape=[1, 4]), b"\0" * 15)])  # not a whole number of FP32 values
    _assert_gateway_400(_post(gw, token, body, {"Inference-Header-Content-Length": str(hlen)}), "element_count_mismatch")
    body, hlen = _binary_body([(dict(meta, shape=[1, 4]), b"\0" * 16)])
    for bad_len in (str(len(body) + 1), "abc"):
        _assert_gateway_400(_post(gw, token, body, {"Inference-Header-Content-Length": bad_len}), "invalid_request")
    _assert_gateway_400(_post(gw, token, body + b"\0" * 8, {"Inference-Header-Content-Length": str(hlen)}), "invalid_request")


@slow
def test_grpc_lies_are_invalid_argument_and_a_stream_stops_at_the_first(tgw: tuple[RunningGateway, str]) -> None:
    gw, token = tgw
    md = [("authorization", f"Bearer {token}")]
    f32 = np.array(ROW, np.float32).tobytes()
    channel, stub = _grpc_stub(gw)
    try:
        for req, words in [(_grpc_request([1, 5], f32 + f32[:4]), "[1, 5]"), (_grpc_request([2, 4], f32), "sends 4"),
                           (_grpc_request([1, 4], f32, name="x"), "input 'x'"), (_grpc_request([1, 4], f32, datatype="FP64"), "FP64"),
                           (_grpc_request([1, 4], b"\0" * 6, datatype="BYTES"), "BYTES")]:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(req, metadata=md, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (info.value.details() or ""), words
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_grpc_request([1, 4], f32, model="no-such-model"), metadata=md, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        answers: list[Any] = []
        with pytest.raises(grpc.RpcError) as info:
            for resp in stub.ModelStreamInfer(iter([_grpc_request([1, 4], f32), _grpc_request([64, 4], f32)]), metadata=md,
                                              timeout=20):
                answers.append(resp)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sends 4" in (info.value.details() or "")
        assert len(answers) == 1 and not answers[0].error_message  # the valid first message was answered
    finally:
        channel.close()


@slow
def test_compressed_bodies_are_inflated_with_a_bound(tgw: tuple[RunningGateway, str]) -> None:
    gw, token = tgw
    bomb = gzip.compress(b" " * (gw.settings.gateway_max_body_bytes + 1))  # ~16 KiB on the wire
    r = _post(gw, token, bomb, {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large", r.text
    r = _post(gw, token, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_encoding"
    r = _post(gw, token, json.dumps({"inputs": [_inp([1, 4], ROW)]}).encode(), {"Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip" in r.json()["error"]


@slow
def test_the_element_cap_applies_even_within_max_batch_size(triton: TritonFixture, tmp_path: Path) -> None:
    s = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}", triton=triton, gateway_max_tensor_elements=100)
    with run_gateway(s) as gw:
        token = gw.create_user("cap_user")
        _assert_gateway_400(_post(gw, token, json.dumps({"inputs": [_inp([64, 4], ROW * 64)]}).encode()), "too_many_elements",
                            "input 'input'", "256", "100")
        assert _post(gw, token, json.dumps({"inputs": [_inp([25, 4], ROW * 25)]}).encode()).status_code == 200


@slow
def test_valid_requests_of_every_shape_still_pass(tgw: tuple[RunningGateway, str]) -> None:
    gw, token = tgw
    auth = {"Authorization": f"Bearer {token}"}
    for inputs in ([_inp([1, 4], ROW)], [_inp([2, 4], [ROW, ROW])], [_inp([64, 4], ROW * 64)]):
        r = _post(gw, token, json.dumps({"inputs": inputs}).encode())
        assert r.status_code == 200, r.text
    r = _post(gw, token, json.dumps({"inputs": [_inp([1, 4], ROW)]}).encode(), path=f"/v2/models/{MODEL}/versions/1/infer")
    assert r.status_code == 200
    r = _post(gw, token, json.dumps({"inputs": [_inp([1, 4], ROW)]}).encode(), path=f"/v2/models/{MODEL}/versions/9/infer")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    digits = np.random.default_rng(0).uniform(0, 16, (3, 1, 8, 8)).astype(np.float32)
    r = _post(gw, token, json.dumps({"inputs": [_inp(list(digits.shape), digits.tolist())]}).encode(),
              path="/v2/models/digits-cnn/infer")
    assert r.status_code == 200 and r.json()["outputs"]
    host = gw.url.removeprefix("http://")
    for binary in (True, False):
        for algo in (None, "gzip", "deflate"):
            client = httpclient.InferenceServerClient(url=host)
            try:
                inp = httpclient.InferInput("input", [8, 4], "FP32")
                inp.set_data_from_numpy(np.tile(np.array(ROW, np.float32), (8, 1)), binary_data=binary)
                res = client.infer(MODEL, [inp], headers=dict(auth), request_compression_algorithm=algo)
                assert res.as_numpy("label").shape[0] == 8, (binary, algo)
            finally:
                client.close()
    client = grpcclient.InferenceServerClient(url=gw.grpc_url)
    try:
        inp = grpcclient.InferInput("input", [2, 4], "FP32")
        inp.set_data_from_numpy(np.array([ROW, ROW], np.float32))
        assert client.infer(MODEL, [inp], headers={"authorization": f"Bearer {token}"}).as_numpy("label").shape[0] == 2
    finally:
        client.close()
    with gw.client(token) as c:
        r = c.post(f"/api/v1/predict/{MODEL}", json={"instances": [ROW] * 64})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 64


@slow
def test_rest_predict_is_bounded_and_refuses_booleans(tgw: tuple[RunningGateway, str]) -> None:
    gw, token = tgw
    feats = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    with gw.client(token) as c:
        r = c.post(f"/api/v1/predict/{MODEL}", json={"instances": [ROW] * 65})
        assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_large", r.text
        assert "input 'input'" in r.json()["error"]["message"]
        record = dict(zip(feats, ROW, strict=True))
        for payload, field in [({"records": [record, dict(record, petal_width_cm=True)]}, "records[1].petal_width_cm"),
                               ({"instances": [ROW, [5.0, False, 1.0, 0.2]]}, "instances[1][1]")]:
            r = c.post(f"/api/v1/predict/{MODEL}", json=payload)
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "boolean_not_allowed" and field in err["message"] and err["details"]["field"] == field
        assert c.post(f"/api/v1/predict/{MODEL}", json={"records": [record]}).status_code == 200
