"""API keys for machines: created, listed and revoked by their owner; the secret is shown once."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from auth_api import crud
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.core.errors import Unauthorized
from auth_api.deps import GatewayDep, LoginPrincipal, SessionDep
from auth_api.models import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

router = APIRouter(prefix="/api-keys", tags=["api keys"], dependencies=[Depends(no_unknown_query)])


@router.post("", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: ApiKeyCreate, p: LoginPrincipal, gw: GatewayDep, db: SessionDep) -> ApiKeyCreated:
    """Create a key (only for an active account); the response holds the only copy of the secret."""
    if p.user_id is None:
        raise Unauthorized("account not found", code="inactive_user")
    try:
        key, full = crud.create_api_key(db, p.user_id, p.token_version, body)
    except Unauthorized:
        gw.auth.invalidate_user(p.user_id)  # this process's copy of the account was stale
        raise
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key, from_attributes=True).model_dump(), key=full)


@router.get("", response_model=list[ApiKeyPublic])
def list_keys(p: LoginPrincipal, db: SessionDep) -> list[ApiKey]:
    """The caller's keys (without secrets)."""
    assert p.user_id is not None
    return crud.list_api_keys(db, p.user_id)


@router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_key(key_id: Id, p: LoginPrincipal, gw: GatewayDep, db: SessionDep) -> ApiKey:
    """Revoke one of the caller's keys (admins: any key); effective immediately."""
    assert p.user_id is not None
    key = crud.revoke_api_key(db, p.user_id, key_id, any_owner=p.role == "admin")
    gw.auth.forget_key(key.prefix)
    return key
