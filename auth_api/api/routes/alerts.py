"""Alerts: yours (admins: everyone's), filtered and paged; mark one or all read; raise one by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlmodel import Session

from auth_api.alerts import store
from auth_api.alerts.models import Alert, AlertCreate, AlertPage, AlertPublic, ReadAll, Severity
from auth_api.api.params import Id, Offset
from auth_api.api.routes.history import caught_up
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, InvalidInput
from auth_api.deps import GatewayDep, UserPrincipal
from auth_api.models import User

router = APIRouter(prefix="/alerts", tags=["alerts"], dependencies=[Depends(no_unknown_query)])


@router.get("", response_model=AlertPage)
async def list_alerts(p: UserPrincipal, gw: GatewayDep, unread: bool | None = None, severity: Severity | None = None,
                      asset: Annotated[str | None, Query(max_length=128)] = None,
                      model: Annotated[str | None, Query(max_length=64)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> AlertPage:
    """Newest first, each naming its model and rule. Includes alerts from every prediction answered before the call
    (the list waits, at most ``gateway_history_read_wait_s``, for the history ingester that evaluates the rules)."""
    await caught_up(gw, gw.settings.gateway_history_read_wait_s)
    rows, total, n_unread = await gw.run_db(store.list_alerts, p, unread=unread, severity=severity, asset=asset, model=model,
                                            limit=limit, offset=offset)
    return AlertPage(items=[AlertPublic.model_validate(r, from_attributes=True) for r in rows], total=total, unread=n_unread,
                     limit=limit, offset=offset)


def _manual(db: Session, p: Principal, body: AlertCreate) -> Alert:
    if body.user_id is not None and body.user_id != p.user_id:
        if p.role != "admin":
            raise Forbidden("only admins may raise alerts for other users", code="insufficient_role",
                            details={"field": "user_id"})
        if db.get(User, body.user_id) is None:
            raise InvalidInput(f"no user {body.user_id}", code="unknown_user", details={"field": "user_id"})
    return store.create_manual(db, p, body)


@router.post("", response_model=AlertPublic, status_code=status.HTTP_201_CREATED)
async def create_alert(body: AlertCreate, p: UserPrincipal, gw: GatewayDep) -> Alert:
    """Raise an alert by hand (in-app): yours, or an admin's for any user."""
    return await gw.run_db(_manual, p, body)


@router.post("/read-all", response_model=ReadAll)
async def read_all(p: UserPrincipal, gw: GatewayDep) -> ReadAll:
    """Mark every unread alert of yours read (an admin's own only, not everyone's)."""
    return ReadAll(updated=await gw.run_db(store.mark_all_read, p))


@router.get("/{alert_id}", response_model=AlertPublic)
async def get_alert(alert_id: Id, p: UserPrincipal, gw: GatewayDep) -> Alert:
    """One alert (404 for someone else's)."""
    return await gw.run_db(store.get_alert, p, alert_id)


@router.put("/{alert_id}/read", response_model=AlertPublic)
async def mark_read(alert_id: Id, p: UserPrincipal, gw: GatewayDep) -> Alert:
    """Mark an alert read (idempotent; 404 for someone else's)."""
    return await gw.run_db(store.mark_read, p, alert_id)
