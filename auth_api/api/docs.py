"""Swagger UI and ReDoc served from the gateway's own process: the assets come from the ``fastapi-offline`` package.

FastAPI's default pages load their JavaScript and CSS from a CDN, so ``/docs`` is blank on a machine without internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse

STATIC_URL = "/static/docs"
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"


def install_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve ``docs_url`` and ``redoc_url`` with local assets (create the app with ``docs_url=None, redoc_url=None``)."""
    if not (STATIC_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"fastapi-offline's assets are missing from {STATIC_DIR}: reinstall the 'fastapi-offline' package")
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}{redirect_url}",
                                   swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js", with_google_fonts=False,
                              redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png")


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. 'invalid_tensor', 'model_not_found'.")
    message: str = Field(description="What went wrong, for a person.")
    details: dict[str, Any] | None = Field(None, description="Structured context (field names, limits).")


class ErrorBody(BaseModel):
    """Every error of the gateway's own API (``/api/v1/...``, ``/health``): one shape."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """Errors on the KServe v2 routes (``/v2/...``) use the protocol's own shape, which stock tritonclient parses."""

    error: str = Field(description="What went wrong (the field stock tritonclient reads).")
    code: str | None = Field(None, description="The gateway's machine-readable code, on errors the gateway raises itself.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Client error: `{\"error\": {\"code\", \"message\", \"details\"}}`"},
    "5XX": {"model": ErrorBody, "description": "Server or upstream error, same shape"},
}
V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": V2ErrorBody, "description": "Client error, KServe v2 shape: `{\"error\": \"<message>\"}`"},
    "5XX": {"model": V2ErrorBody, "description": "Server or upstream error, KServe v2 shape"},
}


_TENSOR = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "description": "Input name from the model's config (GET /v2/models/{name})."},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                                "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "data": {"type": "array", "items": {}, "description": "Values, flat or nested, row-major; as many as the shape says."},
        "parameters": {"type": "object"},
    },
}
V2_INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A KServe v2 inference request (JSON; the binary-tensor extension is accepted too). Checked against "
                       "the model's config before it reaches Triton.",
        "content": {"application/json": {
            "schema": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string", "description": "Echoed back in the response."},
                "inputs": {"type": "array", "items": _TENSOR},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                                        "parameters": {"type": "object"}}}},
                "parameters": {"type": "object"},
            }},
            "example": {"id": "1", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                               "data": [5.1, 3.5, 1.4, 0.2]}]},
        }},
    },
}
