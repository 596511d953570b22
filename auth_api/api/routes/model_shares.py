"""``PUT /api/v1/models/{name}/share``: the owner (engineer or admin) shares a trained model with everyone, or stops."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import Forbidden
from auth_api.deps import CurrentPrincipal, GatewayDep
from auth_api.jobs.ownership import ensure_visible, may_manage, owner_of, shares_of
from auth_api.models import RequestBody
from mlstack.errors import ModelNotFound

router = APIRouter(prefix="/models", tags=["models"])


class ShareRequest(RequestBody):
    shared: bool


@router.put("/{name}/share")
async def share(name: Annotated[str, Path(max_length=64)], body: ShareRequest, p: CurrentPrincipal,
                gw: GatewayDep) -> dict[str, object]:
    """Share (``{"shared": true}``) or unshare a user model; every gateway sees the change within seconds."""
    ensure_visible(gw.extras, p, name)
    if owner_of(name) is None or not gw.catalog.versions(name):
        raise ModelNotFound(name)
    if not may_manage(p, name) or not p.at_least("engineer"):
        raise Forbidden("only the model's owner (engineer or admin) or an admin shares it", code="insufficient_role")
    shares = shares_of(gw.extras)
    assert shares is not None and p.user_id is not None
    await run_in_threadpool(shares.set, name, body.shared, p.user_id)
    return {"name": name, "shared": body.shared}
