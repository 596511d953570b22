"""``/api/v1/batteries``: the fleet. Owners see and change their batteries, admins every one; others get 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from apps.battery.access import battery_for
from apps.battery.models import Battery, BatteryCreate, BatteryList, BatteryPublic, BatteryUpdate
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.core.errors import Conflict
from auth_api.deps import SessionDep, UserPrincipal
from auth_api.models import utcnow

router = APIRouter(prefix="/batteries", tags=["batteries"], dependencies=[Depends(no_unknown_query)])


def _duplicate(serial: str) -> Conflict:
    return Conflict(f"you already have a battery with serial '{serial}'", code="duplicate_serial",
                    details={"field": "serial", "serial": serial})


@router.post("", response_model=BatteryPublic, status_code=status.HTTP_201_CREATED)
def create_battery(body: BatteryCreate, p: UserPrincipal, db: SessionDep) -> BatteryPublic:
    """Register a battery; the caller owns it."""
    assert p.user_id is not None
    b = Battery(owner_id=p.user_id, meta=body.metadata, **body.model_dump(exclude={"metadata"}))
    db.add(b)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise _duplicate(body.serial) from None
    db.refresh(b)
    return BatteryPublic.of(b)


@router.get("", response_model=BatteryList)
def list_batteries(p: UserPrincipal, db: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                   offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> BatteryList:
    """The caller's batteries (admins: every battery), oldest first."""
    q = select(Battery)
    if not p.at_least("admin"):
        q = q.where(col(Battery.owner_id) == p.user_id)
    total = db.exec(select(func.count()).select_from(q.subquery())).one()
    rows = db.exec(q.order_by(col(Battery.id)).offset(offset).limit(limit)).all()
    return BatteryList(items=[BatteryPublic.of(b) for b in rows], total=int(total))


@router.get("/{battery_id}", response_model=BatteryPublic)
def get_battery(battery_id: Id, p: UserPrincipal, db: SessionDep) -> BatteryPublic:
    return BatteryPublic.of(battery_for(db, p, battery_id))


@router.patch("/{battery_id}", response_model=BatteryPublic)
def update_battery(battery_id: Id, body: BatteryUpdate, p: UserPrincipal, db: SessionDep) -> BatteryPublic:
    """Change some fields (the serial is the battery's identity and stays)."""
    b = battery_for(db, p, battery_id)
    changes = body.model_dump(exclude_unset=True)
    if "metadata" in changes:
        b.meta = changes.pop("metadata") or {}
    for k, v in changes.items():
        if v is None and k != "installed_on":
            continue
        setattr(b, k, v)
    b.updated_at = utcnow()
    db.add(b)
    db.commit()
    db.refresh(b)
    return BatteryPublic.of(b)


@router.delete("/{battery_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_battery(battery_id: Id, p: UserPrincipal, db: SessionDep) -> Response:
    """Delete a battery with its telemetry, analyses, twin and thermal records (one transaction)."""
    b = battery_for(db, p, battery_id)
    db.delete(b)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
