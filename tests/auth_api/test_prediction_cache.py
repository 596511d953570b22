"""The gateway's prediction cache, and never a 200 without outputs, against the real Triton and gateway.

Triton 2.51's response cache stores a backend error as an empty success: the same NaN row got 400, then
``200 {"outputs": []}``, recorded as predictions. The gateway now answers 400 every time (Triton's cache on or off),
keeps Triton's cache off by default, and caches whole successful answers itself, per model, with flushes.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from auth_api.proxy.cache import PredictionCache, cache_of
from mlstack.settings import Settings
from tests.fixtures.clones import clone_model, wait_ready
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture, free_ports

SRC = "iris-logreg"
SUFFIX = secrets.token_hex(3)  # Redis is shared by every session on the box
T_ON, T_OFF, CACHED, UNCACHED, TWO = (f"pc-{k}-{SUFFIX}" for k in ("tcache-on", "tcache-off", "cached", "uncached", "two"))


def _body(row: list, rid: str | None = None) -> bytes:
    doc: dict = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    if rid is not None:
        doc = {"id": rid, **doc}
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def models(triton: TritonFixture) -> Iterator[Path]:
    repo = triton.repository
    clone_model(repo, SRC, T_ON, response_cache=True)
    clone_model(repo, SRC, T_OFF)
    clone_model(repo, SRC, CACHED, cache=True, cache_ttl_s=600)
    clone_model(repo, SRC, UNCACHED, cache=False)
    clone_model(repo, SRC, TWO, cache=True, versions=2)
    for m in (T_ON, T_OFF, CACHED, UNCACHED, TWO):
        wait_ready(triton.server.http_url, m)
    yield repo


def _settings(tmp: Path, triton: TritonFixture, **kw: object) -> Settings:
    tmp.mkdir(parents=True, exist_ok=True)
    return gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", triton=triton, **kw)


@pytest.fixture(scope="module")
def gw(models: Path, triton: TritonFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("pcache")
    with run_gateway(_settings(tmp, triton, gateway_prediction_cache=True)) as g:
        yield g


def _cache(g: RunningGateway) -> PredictionCache:
    c = cache_of(g.state.extras)
    assert c is not None
    return c


def _post(g: RunningGateway, model: str, body: bytes, version: int | None = None) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return g.client(g.admin_token()).post(path, content=body, headers={"content-type": "application/json"})


def test_triton_response_cache_is_off_by_default() -> None:
    assert Settings().triton_cache_size == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", [T_ON, T_OFF])
@pytest.mark.parametrize("row", [[5.1, "NaN", 1.4, 0.2], [1e39, 3.5, 1.4, 0.2]], ids=["nan", "1e39"])
def test_bad_row_thrice_is_400_thrice_and_never_a_success(gw: RunningGateway, triton: TritonFixture, model: str,
                                                          row: list) -> None:
    body = _body(row).replace(b'"NaN"', b"NaN")
    answers = [_post(gw, model, body) for _ in range(3)]
    assert [r.status_code for r in answers] == [400, 400, 400], [r.text for r in answers]
    assert all("contains" in r.json()["error"] for r in answers)
    gw.flush_history()
    rows = gw.client(gw.admin_token()).get("/api/v1/history", params={"model": model, "status": 200}).json()
    assert rows["total"] == 0
    assert triton.ready()


def _grpc_nan(g: RunningGateway, token: str, model: str, how: str, n: int = 3) -> list[InferenceServerException]:
    """The same NaN row ``n`` times over tritonclient.grpc (unary calls, or one stream); the error of each answer."""
    x = np.array([[5.1, np.nan, 1.4, 0.2]], dtype=np.float32)
    md = {"authorization": f"Bearer {token}"}
    cli = grpcclient.InferenceServerClient(g.grpc_url)
    errors: list[InferenceServerException] = []
    try:
        if how == "unary":
            for _ in range(n):
                inp = grpcclient.InferInput("input", [1, 4], "FP32")
                inp.set_data_from_numpy(x)
                try:
                    res = cli.infer(model, [inp], headers=md)
                except InferenceServerException as exc:
                    errors.append(exc)
                else:
                    raise AssertionError(f"OK with outputs {res.get_response().outputs!r} for a NaN row")
            return errors
        answers: queue.Queue[tuple[object, InferenceServerException | None]] = queue.Queue()
        cli.start_stream(callback=lambda result, error: answers.put((result, error)), headers=md)
        for _ in range(n):
            inp = grpcclient.InferInput("input", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            cli.async_stream_infer(model, [inp])
        for _ in range(n):
            result, error = answers.get(timeout=30)
            assert error is not None, f"a streamed OK for a NaN row: {result.get_response()!r}"  # type: ignore[attr-defined]
            errors.append(error)
        cli.stop_stream()
        return errors
    finally:
        cli.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["unary", "stream"])
def test_bad_row_thrice_over_grpc_is_refused_thrice_and_recorded_as_failures(gw: RunningGateway, how: str) -> None:
    """Triton's response cache on: once a NaN row's error is in it, the same row gets an OK without outputs from Triton
    (unary and streamed alike); the gateway never forwards or records that as a success: INVALID_ARGUMENT naming the
    NaN (unary), an error answer (stream), a failed prediction in history."""
    token = gw.create_user(f"grpc-{how}-{SUFFIX}")
    first = _grpc_nan(gw, token, T_ON, "unary", 1)  # Triton's answer: its backend's error, which its cache stores
    errors = first + _grpc_nan(gw, token, T_ON, how)
    assert len(errors) == 4
    if how == "unary":
        assert [e.status() for e in errors] == ["StatusCode.INVALID_ARGUMENT"] * 4, [e.message() for e in errors]
    assert all("NaN" in (e.message() or "") for e in errors), [e.message() for e in errors]
    gw.flush_history()
    rows = gw.client(token).get("/api/v1/history", params={"model": T_ON}).json()
    assert rows["total"] == 4 and all(r["status"] == 400 for r in rows["items"]), rows
    assert {r["protocol"] for r in rows["items"]} == {"grpc"}


def _gather_onnx() -> bytes:
    """A two-class "model" that looks its row up by index: a finite input out of range (5) fails in the backend."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32), "table")
    nodes = [helper.make_node("Cast", ["input"], ["idx2"], to=TensorProto.INT64),
             helper.make_node("Squeeze", ["idx2", "axis1"], ["idx"]),
             helper.make_node("Gather", ["table", "idx"], ["probabilities"], axis=0),
             helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=1)]
    graph = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None, 1]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
                              [table, numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _publish_with_response_cache(repo: Path, name: str, staging: Path) -> None:
    """Publish the gather model into ``staging``, turn Triton's response cache on, move it into ``repo`` at once."""
    from mlstack.repository import config as cfgmod
    from mlstack.repository.card import Dataset, ModelCard
    from mlstack.repository.publish import Candidate, publish

    card = ModelCard(name=name, task="classification", framework="onnx", algorithm="lookup", labels=["a", "b"],
                     dataset=Dataset(name="none", source="test"), feature_names=["x"])
    publish(staging, Candidate(name=name, onnx_bytes=_gather_onnx(), card=card, labels=["a", "b"],
                               label_output="probabilities"), max_batch_size=8)
    cfg = cfgmod.read_config(staging / name / "config.pbtxt")
    cfg.response_cache.enable = True
    (staging / name / "config.pbtxt").write_text(cfgmod.dumps(cfg))
    tmp = repo.parent / f".stage-{name}"
    shutil.copytree(staging / name, tmp)
    tmp.rename(repo / name)


@pytest.mark.slow
def test_predict_never_answers_200_without_predictions(gw: RunningGateway, triton: TritonFixture, tmp_path: Path) -> None:
    """/api/v1/predict, like /v2: a row the backend fails on (a finite one, so the gateway cannot refuse it first)
    is an error every time, never 200 with ``"predictions": []`` once Triton's response cache holds the error."""
    name = f"pc-gather-{SUFFIX}"
    _publish_with_response_cache(triton.repository, name, tmp_path / "staging")
    wait_ready(triton.server.http_url, name)
    token = gw.create_user(f"predict-{SUFFIX}")
    with gw.client(token) as c:
        ok = c.post(f"/api/v1/predict/{name}", json={"instances": [[1.0]]})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == "b", ok.text
        answers = [c.post(f"/api/v1/predict/{name}", json={"instances": [[5.0]]}) for _ in range(3)]
        assert [r.status_code for r in answers] == [422, 502, 502], [r.text for r in answers]
        assert answers[1].json()["error"]["code"] == "upstream_empty_answer"
        v2 = c.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32",
                                                                  "data": [5.0]}]})
        assert v2.status_code == 502, v2.text  # the same answer as the v2 route
    gw.flush_history()
    rows = gw.client(token).get("/api/v1/history", params={"model": name}).json()["items"]
    assert sorted(r["status"] for r in rows) == [200, 422, 502, 502, 502], rows


@pytest.mark.slow
def test_hit_is_byte_identical_and_carries_its_own_id(gw: RunningGateway) -> None:
    row = [6.3, 2.9, 5.6, 1.8]
    c = _cache(gw)
    first = _post(gw, CACHED, _body(row, "first"))
    before = c.counts(CACHED)
    second = _post(gw, CACHED, _body(row, "second"))
    third = _post(gw, CACHED, _body(row))
    assert first.status_code == second.status_code == third.status_code == 200
    assert c.counts(CACHED)["hits"] == before["hits"] + 1  # the third's bytes differ (no id, other spacing): a miss
    assert second.json()["id"] == "second" and first.json()["id"] == "first" and "id" not in third.json()
    assert second.content.replace(b'"second"', b'"first"') == first.content  # every other byte the same
    assert json.loads(third.content) == {k: v for k, v in first.json().items() if k != "id"}
    # binary outputs through the stock client: the header length is patched with the id
    cli = httpclient.InferenceServerClient(gw.url.removeprefix("http://"), ssl=False)
    x = np.array([row], dtype=np.float32)
    outs = []
    for rid in ("b1", "b2-longer-id"):
        inp = httpclient.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        res = cli.infer(CACHED, [inp], request_id=rid, outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)],
                        headers={"Authorization": f"Bearer {gw.admin_token()}"})
        assert res.get_response()["id"] == rid
        outs.append(res.as_numpy("probabilities"))
    cli.close()
    np.testing.assert_array_equal(outs[0], outs[1])
    gw.flush_history()
    hist = gw.client(gw.admin_token()).get("/api/v1/history", params={"model": CACHED}).json()
    assert hist["total"] >= 5  # a hit is a prediction too


@pytest.mark.slow
def test_model_with_cache_off_never_hits(gw: RunningGateway) -> None:
    c = _cache(gw)
    for _ in range(3):
        assert _post(gw, UNCACHED, _body([5.0, 3.0, 1.5, 0.2])).status_code == 200
    assert c.counts(UNCACHED) == {"hits": 0, "misses": 0}


@pytest.mark.slow
def test_clear_promote_and_delete_flush(gw: RunningGateway, triton: TritonFixture) -> None:
    c = _cache(gw)
    admin = gw.client(gw.admin_token())
    body = _body([5.9, 3.0, 5.1, 1.8])
    wait_ready(triton.server.http_url, TWO, 2)
    assert _post(gw, TWO, body, 2).status_code == 200
    assert _post(gw, TWO, body, 2).status_code == 200
    hits = c.counts(TWO)["hits"]
    assert hits >= 1
    assert admin.post(f"/api/v1/models/{TWO}/cache/clear").json()["cleared"] >= 1
    assert _post(gw, TWO, body, 2).status_code == 200
    assert c.counts(TWO)["hits"] == hits  # cleared: a miss
    assert _post(gw, TWO, body, 2).status_code == 200
    assert c.counts(TWO)["hits"] == hits + 1
    user = gw.client(gw.create_user(f"u{SUFFIX}"))
    assert user.post(f"/api/v1/models/{TWO}/cache/clear").status_code == 403
    assert admin.post(f"/api/v1/models/{TWO}/versions/1/promote").status_code == 200
    assert _post(gw, TWO, body, 2).status_code == 200
    assert c.counts(TWO)["hits"] == hits + 1  # promote flushed version 2's answers too
    wait_ready(triton.server.http_url, TWO, 1)
    assert _post(gw, TWO, body, 1).status_code == 200 and _post(gw, TWO, body, 1).status_code == 200
    assert c.counts(TWO)["hits"] == hits + 2
    assert admin.delete(f"/api/v1/models/{TWO}/versions/2").status_code == 200
    assert _post(gw, TWO, body, 1).status_code == 200
    assert c.counts(TWO)["hits"] == hits + 2  # deleting a version flushed the model's answers


@pytest.mark.slow
def test_model_stats(gw: RunningGateway) -> None:
    admin = gw.client(gw.admin_token())
    for _ in range(2):
        _post(gw, CACHED, _body([4.4, 2.9, 1.4, 0.2]))
    _post(gw, CACHED, _body([1, 2, 3]))  # 400 (shape)
    gw.flush_history()
    st = admin.get(f"/api/v1/models/{CACHED}/stats").json()
    assert st["requests"] >= 3 and st["successes"] >= 2 and st["cache_hits"] >= 1
    assert st["latency_ms"]["p50"] is not None and st["latency_ms"]["p50"] <= st["latency_ms"]["p99"]
    assert st["cache"]["enabled"] is True and st["cache"]["ttl_s"] == 600 and st["cache"]["this_process"]["hits"] >= 1
    v2 = admin.get(f"/v2/models/{CACHED}/stats")
    assert v2.status_code == 200 and v2.json()["model_stats"][0]["name"] == CACHED
    user = gw.client(gw.create_user(f"s{SUFFIX}"))
    assert user.get(f"/api/v1/models/{CACHED}/stats").status_code == 403
    assert user.get(f"/v2/models/{CACHED}/stats").status_code == 403
    assert admin.get("/api/v1/models/no-such-model/stats").status_code == 404


@pytest.mark.slow
def test_redis_cache_is_shared_by_two_gateways(models: Path, triton: TritonFixture, tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6379/0"
    body = _body([6.7, 3.1, 4.4, 1.4], "r1")
    with run_gateway(_settings(tmp_path / "a", triton, redis_url=url)) as a, \
            run_gateway(_settings(tmp_path / "b", triton, redis_url=url)) as b:
        assert _post(a, CACHED, body).status_code == 200
        got = _post(b, CACHED, body.replace(b'"r1"', b'"r2"'))
        assert got.status_code == 200 and got.json()["id"] == "r2"
        assert _cache(b).counts(CACHED)["hits"] == 1 and _cache(b).backend == "redis"
        assert a.client(a.admin_token()).post(f"/api/v1/models/{CACHED}/cache/clear").status_code == 200
        assert _post(b, CACHED, body).status_code == 200
        assert _cache(b).counts(CACHED)["hits"] == 1  # a's clear emptied b's view too


@pytest.mark.slow
def test_redis_down_still_serves(models: Path, triton: TritonFixture, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with run_gateway(_settings(tmp_path, triton, redis_url=f"redis://127.0.0.1:{port}/0")) as g:
        for _ in range(3):
            r = _post(g, CACHED, _body([5.0, 3.4, 1.5, 0.2]))
            assert r.status_code == 200 and r.json()["outputs"]
        resp = g.client(g.admin_token()).post(f"/api/v1/models/{CACHED}/cache/clear")
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "cache_unavailable"


def _triton_params(triton: TritonFixture, name: str) -> dict:
    r = httpx.get(f"{triton.server.http_url}/v2/models/{name}/config", timeout=5)
    return dict(r.json().get("parameters") or {}) if r.status_code == 200 else {}


@pytest.mark.slow
def test_cache_policy_through_the_api_and_the_cli_while_triton_reloads(gw: RunningGateway, triton: TritonFixture) -> None:
    name = f"pc-policy-{SUFFIX}"
    clone_model(triton.repository, SRC, name)  # no parameters: the gateway's default (on, 300 s)
    wait_ready(triton.server.http_url, name)
    admin = gw.client(gw.admin_token())
    url = f"/api/v1/models/{name}/cache"
    got = admin.get(url).json()
    assert (got["enabled"], got["ttl_s"], got["configured"]) == (True, 300, {"enabled": None, "ttl_s": None}), got
    for bad in ({"enabled": "yes"}, {"enabled": True, "ttl_s": 0}, {"enabled": True, "ttl_s": -5}, {"ttl_s": 5},
                {"enabled": True, "ttl_s": 1e12}, {"enabled": True, "tll_s": 5}, {"enabled": True, "ttl_s": "soon"}):
        r = admin.put(url, json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (bad, r.text)
    assert admin.put("/api/v1/models/no-such-model/cache", json={"enabled": False}).status_code == 404
    assert admin.get("/api/v1/models/no-such-model/cache").status_code == 404
    user = gw.client(gw.create_user(f"p{SUFFIX}"))
    assert user.put(url, json={"enabled": False}).status_code == 403 and user.get(url).status_code == 403

    # Turning it off rewrites config.pbtxt: a polling Triton reloads the model; requests keep being answered.
    codes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        rng = np.random.default_rng(3)
        with gw.client(gw.admin_token()) as c:
            while not stop.is_set():
                codes.append(c.post(f"/v2/models/{name}/infer", content=_body(rng.uniform(1, 7, 4).round(2).tolist()),
                                    headers={"content-type": "application/json"}).status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        r = admin.put(url, json={"enabled": False, "ttl_s": 60})
        assert r.status_code == 200 and r.json()["changed"] is True, r.text
        assert (r.json()["enabled"], r.json()["ttl_s"], r.json()["configured"]) == (False, 60, {"enabled": False, "ttl_s": 60})
        assert 'key: "mlstack_cache"' in (triton.repository / name / "config.pbtxt").read_text()
        deadline = time.monotonic() + 30
        while _triton_params(triton, name).get("mlstack_cache", {}).get("string_value") != "false":
            assert time.monotonic() < deadline, "Triton never reloaded the changed config"
            time.sleep(0.2)
        n = len(codes)
        while len(codes) < n + 50:  # and it keeps answering after the swap
            assert time.monotonic() < deadline + 30 and worker.is_alive()
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
    assert len(codes) > 50 and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert admin.put(url, json={"enabled": False, "ttl_s": 60}).json()["changed"] is False  # same policy: no rewrite
    same = _body([6.1, 2.8, 4.7, 1.2])
    hits = _cache(gw).counts(name)["hits"]
    assert _post(gw, name, same).status_code == _post(gw, name, same).status_code == 200
    assert _cache(gw).counts(name)["hits"] == hits  # off at once on the worker that took the change

    env = {**os.environ, "MLSTACK_REPOSITORY": str(triton.repository)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlstack", "cache", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    out = cli(name, "--on", "--ttl", "42")
    assert out.returncode == 0 and f"{name}: prediction cache on, ttl 42 s" in out.stdout, out.stdout + out.stderr
    got = admin.get(url).json()
    assert (got["enabled"], got["ttl_s"], got["configured"]) == (True, 42, {"enabled": True, "ttl_s": 42}), got
    bad = cli(name, "--ttl", "-1")
    assert bad.returncode == 2 and "invalid_cache_policy" in bad.stderr, bad.stdout + bad.stderr
    assert cli("no-such-model", "--off").returncode == 2
    assert "ttl 42 s" in cli(name).stdout  # no option: shows the policy
    deadline = time.monotonic() + 10  # a gateway re-reads a policy changed behind its back within 2 s
    while _cache(gw).counts(name)["hits"] == hits:
        assert time.monotonic() < deadline, "the policy the CLI wrote never applied"
        assert _post(gw, name, same).status_code == 200
        time.sleep(0.3)
