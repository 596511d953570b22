"""Attack suite / ecosystem: stock tritonclient works through the gateway, its errors included.

``get_model_repository_index()`` and ``get_inference_statistics()`` answer over HTTP as over gRPC (statistics for
engineers and admins only, on both transports), and the gateway's own refusals on ``/v2/...`` (401, 403, 404, 413,
429, 400) use the KServe v2 shape ``{"error": "<message>"}``, so tritonclient raises InferenceServerException with the
message instead of failing to decode it; ``/api/v1/...`` keeps ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
MODEL = "iris-logreg"
ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
BURST = 30  # per caller: each test uses its own users


@pytest.fixture(scope="module")
def eco(triton: TritonFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, dict[str, str]]]:
    """A gateway in front of the session's Triton with a small body limit and burst, and tokens per role."""
    tmp = tmp_path_factory.mktemp("v2_ecosystem")
    s = gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", triton=triton, gateway_max_body_bytes=64 * 1024,
                         gateway_rate_limit_rps=0.01, gateway_rate_limit_burst=BURST)
    with run_gateway(s) as gw:
        yield gw, {"engineer": gw.create_user("eco_engineer", role="engineer")}


def _http(gw: RunningGateway) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=gw.url.removeprefix("http://"))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _raises(call: Any, *words: str) -> InferenceServerException:
    """``call()`` raises tritonclient's own exception carrying the gateway's message (not a TypeError or a decode error)."""
    with pytest.raises(InferenceServerException) as info:
        call()
    msg = info.value.message()
    assert isinstance(msg, str) and "decoding the response" not in msg, msg
    assert all(w in msg for w in words), msg
    return info.value


def _infer(client: httpclient.InferenceServerClient, data: np.ndarray, token: str | None, binary: bool = True) -> Any:
    inp = httpclient.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=binary)
    return client.infer(MODEL, [inp], headers=_auth(token) if token else None)


def test_repository_index_and_statistics_over_http_and_grpc(eco: tuple[RunningGateway, dict[str, str]]) -> None:
    gw, tokens = eco
    tokens["user"] = gw.create_user("eco_user1")
    client = _http(gw)
    try:
        index = client.get_model_repository_index(headers=_auth(tokens["user"]))
        assert {m["name"] for m in index} >= {MODEL, "iris-svm", "digits-cnn"} and all("state" in m for m in index)
        _infer(client, ROW, tokens["user"])
        stats = client.get_inference_statistics(MODEL, headers=_auth(tokens["engineer"]))
        assert stats["model_stats"][0]["name"] == MODEL and stats["model_stats"][0]["inference_count"] >= 1
        assert client.get_inference_statistics(MODEL, "1", headers=_auth(tokens["engineer"]))["model_stats"][0]["version"] == "1"
        assert len(client.get_inference_statistics(headers=_auth(tokens["engineer"]))["model_stats"]) >= 10
        err = _raises(lambda: client.get_inference_statistics(MODEL, headers=_auth(tokens["user"])), "engineer")
        assert err.status() == "403"
        _raises(lambda: client.get_model_repository_index(), "authentication required")
    finally:
        client.close()
    g = grpcclient.InferenceServerClient(url=gw.grpc_url)
    try:
        md = {"authorization": f"Bearer {tokens['engineer']}"}
        assert MODEL in {m.name for m in g.get_model_repository_index(headers=md).models}
        assert g.get_inference_statistics(MODEL, headers=md).model_stats[0].name == MODEL
        with pytest.raises(InferenceServerException, match="engineer"):
            g.get_inference_statistics(MODEL, headers={"authorization": f"Bearer {tokens['user']}"})
    finally:
        g.close()


def test_gateway_errors_on_v2_are_kserve_shaped_and_tritonclient_reports_them(eco: tuple[RunningGateway, dict[str, str]]) -> None:
    gw, _ = eco
    tokens = {"user": gw.create_user("eco_user2"), "limited": gw.create_user("eco_limited")}
    client = _http(gw)
    try:
        assert _raises(lambda: _infer(client, ROW, None), "authentication required").status() == "401"
        assert _raises(lambda: _infer(client, ROW, "not.a.token")).status() == "401"
        assert _raises(lambda: client.get_model_metadata("no-such-model", headers=_auth(tokens["user"])),
                       "no-such-model").status() == "404"
        assert _raises(lambda: client.infer("no-such-model", [], headers=_auth(tokens["user"])), "not found").status() == "404"
        # the tensor validator: wrong dims and a batch over max_batch_size, as tritonclient sends them
        assert _raises(lambda: _infer(client, np.zeros((1, 5), np.float32), tokens["user"]), "input 'input'",
                       "[1, 5]").status() == "400"
        assert _raises(lambda: _infer(client, np.zeros((65, 4), np.float32), tokens["user"], binary=False),
                       "batch of 65").status() == "400"
        # over the 64 KiB body limit of this gateway
        assert _raises(lambda: _infer(client, np.zeros((64, 4 * 80), np.float32), tokens["user"]), "exceeds").status() == "413"
    finally:
        client.close()
    client = _http(gw)
    try:
        for _ in range(BURST):
            _infer(client, ROW, tokens["limited"])
        assert _raises(lambda: _infer(client, ROW, tokens["limited"]), "rate limit").status() == "429"
    finally:
        client.close()
    g = grpcclient.InferenceServerClient(url=gw.grpc_url)
    try:
        inp = grpcclient.InferInput("input", [65, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((65, 4), np.float32))
        with pytest.raises(InferenceServerException, match="batch of 65") as info:
            g.infer(MODEL, [inp], headers={"authorization": f"Bearer {tokens['user']}"})
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        g.close()


def test_raw_error_bodies_per_prefix(eco: tuple[RunningGateway, dict[str, str]]) -> None:
    gw, _ = eco
    tokens = {"user": gw.create_user("eco_user3")}
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for method, path, status in [("GET", "/v2/models/iris-logreg", 401), ("POST", "/v2/repository/index", 401),
                                     ("GET", "/v2/systemsharedmemory/status", 404), ("POST", "/v2/models/iris-logreg/infer", 401)]:
            r = c.request(method, path)
            assert r.status_code == status and isinstance(r.json()["error"], str), (path, r.text)
        r = c.get("/v2/models/iris-logreg/stats", headers=_auth(tokens["user"]))
        assert r.status_code == 403 and r.json() == {"error": "requires role 'engineer'", "code": "insufficient_role"}
        r = c.post("/v2/repository/index", content=b"x" * (65 * 1024), headers=_auth(tokens["user"]))
        assert r.status_code == 413 and isinstance(r.json()["error"], str)
        r = c.post("/v2/repository/index", content=b"{oops", headers=_auth(tokens["user"]))
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        r = c.post("/v2/repository/index", json={"ready": True}, headers=_auth(tokens["user"]))
        assert r.status_code == 200 and all(m["state"] == "READY" for m in r.json())
        # /api/v1 keeps the richer shape
        r = c.post("/api/v1/predict/no-such-model", json={"instances": [[1.0]]}, headers=_auth(tokens["user"]))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = c.get("/api/v1/history")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_credentials"
