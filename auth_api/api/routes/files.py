"""Signed downloads of stored inputs: ``GET /api/v1/files/{object}?exp=&sig=`` (file backend) and
``GET /api/v1/history/{id}/input`` (307 to a fresh signed URL, S3 presigned with the ``s3`` backend).

A files URL is its own credential: only its HMAC and expiry are checked (403 when either fails), so it can be handed to
an ``<img>`` tag; who may obtain one is decided where it is minted (the prediction's owner or an admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from auth_api import stored_inputs
from auth_api.api.routes.history import PredictionKey, find
from auth_api.core.errors import Forbidden, NotFound
from auth_api.deps import GatewayDep, UserPrincipal
from mlstack.storage import KEY_RE, ObjectMissing, content_type_of
from mlstack.storage.file import FileStorage
from mlstack.storage.signing import verify

router = APIRouter(prefix="/files", tags=["history"])
history_router = APIRouter(prefix="/history", tags=["history"])


def _gone() -> NotFound:
    return NotFound("no such object", code="object_not_found")


@router.get("/{key:path}", response_class=Response, responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def download(key: Annotated[str, Path(max_length=200)], gw: GatewayDep, exp: Annotated[str, Query(max_length=12)] = "",
                   sig: Annotated[str, Query(max_length=64)] = "") -> Response:
    """The bytes of a stored object, with the content type it was stored with, while its signed URL is valid."""
    store = stored_inputs.store_of(gw)
    if store is None or not isinstance(store.storage, FileStorage):
        raise _gone()
    if KEY_RE.fullmatch(key) is None or not verify(store.storage.secret, key, exp, sig):
        raise Forbidden("this download link is invalid or has expired", code="url_invalid")
    try:
        data = await run_in_threadpool(store.storage.get, key)
    except ObjectMissing:
        raise _gone() from None
    return Response(data, media_type=content_type_of(key), headers={
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=60", "Content-Disposition": "inline"})


@history_router.get("/{prediction_id}/input", status_code=307, response_class=RedirectResponse)
async def input_redirect(prediction_id: PredictionKey, p: UserPrincipal, gw: GatewayDep, request: Request) -> RedirectResponse:
    """Redirect (307) to a fresh signed URL of the prediction's kept input; 404 when none was kept."""
    row = await find(gw, p, prediction_id)
    info = await stored_inputs.detail(gw, row, str(request.base_url))
    if info.input_url is None:
        raise NotFound("this prediction's input was not kept", code="input_not_kept", details={"input": info.input})
    return RedirectResponse(info.input_url, status_code=307)
