"""User administration (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from auth_api import crud
from auth_api.core.errors import NotFound
from auth_api.deps import AdminPrincipal, SessionDep
from auth_api.models import User, UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[UserPublic])
def list_users(_: AdminPrincipal, db: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0)] = 0) -> list[User]:
    """All users."""
    return crud.list_users(db, limit, offset)


@router.post("", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, _: AdminPrincipal, db: SessionDep) -> User:
    """Create a user with any role."""
    return crud.create_user(db, body)


@router.get("/{user_id}", response_model=UserPublic)
def get_user(user_id: int, _: AdminPrincipal, db: SessionDep) -> User:
    """One user."""
    user = crud.get_user(db, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", code="user_not_found")
    return user


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(user_id: int, body: UserUpdate, _: AdminPrincipal, db: SessionDep) -> User:
    """Change role, email, password or active flag; deactivating ends the user's sessions."""
    user = get_user(user_id, _, db)
    user = crud.update_user(db, user, body)
    if body.is_active is False and user.id is not None:
        crud.revoke_user_refresh_tokens(db, user.id)
    return user
