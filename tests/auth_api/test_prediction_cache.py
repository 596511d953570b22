"""The gateway's prediction cache, and never a 200 without outputs, against the real Triton and gateway.

Triton 2.51's response cache stores a backend error as an empty success: the same NaN row got 400, then
``200 {"outputs": []}``, recorded as predictions. The gateway now answers 400 every time (Triton's cache on or off),
keeps Triton's cache off by default, and caches whole successful answers itself, per model, with flushes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

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
