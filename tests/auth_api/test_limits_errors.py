"""Limits and errors: 413 on big bodies, 429 + Retry-After, one JSON error shape, Triton down -> fast 503, CORS."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, func, select

from auth_api.models import Prediction
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway


def _err(r: httpx.Response) -> dict:
    body = r.json()
    assert "Traceback" not in r.text
    if r.request.url.path.startswith("/v2/"):  # KServe v2 shape: {"error": "<message>", "code": ...}
        assert set(body) == {"error", "code"} and isinstance(body["error"], str), body
        return {"code": body["code"], "message": body["error"]}
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


# The gateway checks tensors against the model's config before Triton: these gateways know iris-svm's config.
IRIS_CONFIG = 'name: "iris-svm"\nmax_batch_size: 64\ninput { name: "input" data_type: TYPE_FP32 dims: [ 4 ] }\n'
IRIS_REQUEST = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def _know_iris(gw: RunningGateway) -> None:
    (gw.settings.repository / "iris-svm" / "1").mkdir(parents=True)
    (gw.settings.repository / "iris-svm" / "config.pbtxt").write_text(IRIS_CONFIG)


def test_error_shapes(gateway: RunningGateway) -> None:
    token = gateway.create_user("erin")
    with gateway.client(token) as c:
        assert _err(c.get("/no/such/route"))["code"] == "not_found"
        r = c.delete("/api/v1/auth/me")
        assert r.status_code == 405 and _err(r)["code"] == "method_not_allowed"
        r = c.post("/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and _err(r)["code"] == "invalid_request"
        r = c.get("/api/v1/history", params={"limit": "many"})
        assert r.status_code == 422 and _err(r)["details"]["errors"][0]["loc"][-1] == "limit"
        r = c.post("/api/v1/history/1/feedback", json={"correct": "perhaps"})
        assert r.status_code == 422
        r = c.post("/api/v1/predict/iris", json={"instances": [[1, 2]], "records": [{"a": 1}]})
        assert r.status_code == 422 and _err(r)["code"] == "invalid_request"


def test_oversized_body_is_413_and_writes_nothing(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url, gateway_max_body_bytes=1024)
    with run_gateway(settings) as gw:
        token = gw.create_user("frank")
        with gw.client(token) as c:
            big = b'{"inputs": [' + b"1," * 2000 + b"1]}"
            r = c.post("/v2/models/iris/infer", content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413 and _err(r)["code"] == "body_too_large"

            def chunks():  # no Content-Length: the limit applies to the streamed bytes
                for _ in range(10):
                    yield b"x" * 512

            r = c.post("/api/v1/auth/login", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and _err(r)["code"] == "body_too_large"
        gw.flush_history()
        with Session(gw.state.engine) as db:
            assert db.exec(select(func.count()).select_from(Prediction)).one() == 0


def test_rate_limit_429_with_retry_after(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url, gateway_rate_limit_rps=1.0, gateway_rate_limit_burst=3)
    with run_gateway(settings) as gw:
        token = gw.create_user("gina")
        other = gw.create_user("hank")
        with gw.client(token) as c:
            codes = [c.get("/api/v1/auth/me").status_code for _ in range(5)]
            assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
            r = c.get("/api/v1/auth/me")
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and _err(r)["code"] == "rate_limited"
        with gw.client(other) as c2:  # buckets are per user
            assert c2.get("/api/v1/auth/me").status_code == 200
        with gw.client() as c3:
            metrics = c3.get("/metrics").text
        assert "gateway_rate_limited_total 3.0" in metrics


def test_triton_down_is_a_fast_503(gateway: RunningGateway) -> None:
    token = gateway.create_user("ivan")
    _know_iris(gateway)
    with gateway.client(token) as c:
        for path, kw in (("/v2/models/iris-svm/infer", {"json": IRIS_REQUEST}), ("/v2/models/iris-svm", {})):
            start = time.perf_counter()
            r = c.request("POST" if "infer" in path else "GET", path, **kw)
            assert r.status_code == 503 and _err(r)["code"] == "upstream_unavailable"
            assert time.perf_counter() - start < 2.0
        r = c.get("/health/ready")
        checks = _err(r)["details"]["checks"]
        assert r.status_code == 503 and checks["database"] is True and checks["triton"] is False and checks["bento"] is False


@pytest.mark.parametrize("origin,allowed", [("https://app.example.com", True), ("https://evil.example.com", False)])
def test_cors_origins(tmp_path: Path, origin: str, allowed: bool) -> None:
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", gateway_cors_origins=["https://app.example.com"])
    with run_gateway(settings) as gw, gw.client() as c:
        r = c.options("/api/v1/auth/login", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert (r.headers.get("access-control-allow-origin") == origin) is allowed


def test_anonymous_inference_only_when_enabled(tmp_path: Path, db_url: str) -> None:
    payload = IRIS_REQUEST
    with run_gateway(gateway_settings(tmp_path, db_url)) as gw, gw.client() as c:
        assert c.post("/v2/models/iris-svm/infer", json=payload).status_code == 401
    with run_gateway(gateway_settings(tmp_path / "anon", db_url, gateway_allow_anonymous=True)) as gw, gw.client() as c:
        _know_iris(gw)
        assert c.post("/v2/models/iris-svm/infer", json=payload).status_code == 503  # admitted; Triton is down
        assert c.get("/api/v1/history").status_code == 401  # history still needs an account


def test_auth_failures_are_counted_by_reason(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        c.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-jwt"})
        c.get("/api/v1/auth/me", headers={"X-API-Key": "mlk_000000000000.nope"})
        c.get("/api/v1/auth/me")
        c.post("/api/v1/auth/login", json={"username": "nobody", "password": "whatever-password"})
        text = c.get("/metrics").text
    for reason in ("malformed_token", "unknown_api_key", "missing_credentials", "bad_credentials"):
        assert f'gateway_auth_failures_total{{reason="{reason}"}} 1.0' in text, reason
