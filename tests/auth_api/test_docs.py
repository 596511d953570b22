"""Swagger UI and ReDoc work without internet, and the OpenAPI document states the real error shape."""

from __future__ import annotations

import re

from tests.fixtures.gateway import RunningGateway


def test_docs_pages_load_their_assets_from_the_gateway(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets, html
            for url in assets:
                assert url.startswith("/"), f"{page} loads {url} from outside the gateway"
                r = c.get(url)
                assert r.status_code == 200 and len(r.content) > 100, url
            assert "cdn" not in html.lower() and "https://" not in html


def test_openapi_documents_the_error_shape_on_every_route(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        spec = c.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["ErrorBody"]
    assert schema["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert {"code", "message", "details"} <= set(detail["properties"])
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "4XX" in op["responses"], f"{method.upper()} {path} does not document its errors"


def test_v2_infer_can_be_tried_from_the_docs(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        spec = c.get("/openapi.json").json()
    op = spec["paths"]["/v2/models/{name}/infer"]["post"]
    body = op["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["inputs"] and body["example"]["inputs"][0]["name"] == "input"
    err = op["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"]
    assert err.endswith("/V2ErrorBody")  # the KServe v2 shape, not the gateway's object shape
