"""User administration (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from auth_api import crud, passwords, stored_inputs
from auth_api.api.params import Id, Offset
from auth_api.api.strict_query import no_unknown_query
from auth_api.core.errors import Conflict, NotFound
from auth_api.deps import AdminPrincipal, GatewayDep, SessionDep
from auth_api.models import Message, Role, User, UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(no_unknown_query)])


@router.get("", response_model=list[UserPublic])
def list_users(_: AdminPrincipal, db: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Offset = 0, role: Annotated[Role | None, Query(description="Only users with this role.")] = None,
               ) -> list[User]:
    """All users (or those with ``role``), by id."""
    return crud.list_users(db, limit, offset, role)


@router.post("", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, _: AdminPrincipal, gw: GatewayDep) -> User:
    """Create a user with any role (usernames and emails are unique case-insensitively: 409 otherwise)."""
    password_hash = await gw.hashing.hash(body.password)
    return await gw.run_db(crud.create_user, body, password_hash)


@router.get("/{user_id}", response_model=UserPublic)
def get_user(user_id: Id, _: AdminPrincipal, db: SessionDep) -> User:
    """One user."""
    user = crud.get_user(db, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound(f"user {user_id} not found", code="user_not_found")
    return user


@router.patch("/{user_id}", response_model=UserPublic)
async def update_user(user_id: Id, body: UserUpdate, admin: AdminPrincipal, gw: GatewayDep) -> User:
    """Change role, email, password or active flag, effective on the user's next request.

    A new password or deactivation ends the user's sessions (refresh tokens revoked, access tokens refused); the last
    active admin cannot be demoted or deactivated (409 ``last_admin``).
    """
    password_hash = await gw.hashing.hash(body.password) if body.password else None

    def change(db: SessionDep) -> User:
        user = get_user(user_id, admin, db)
        if body.password:
            passwords.check(body.password, user.username, body.email or user.email)
        return crud.update_user(db, user, body, password_hash, code_key=gw.codec.code_key)

    try:
        return await gw.run_db(change)
    finally:
        gw.auth.invalidate_user(user_id)
        mailer = gw.extras.get("mailer")
        if mailer is not None and body.email:
            mailer.wake()


@router.delete("/{user_id}", response_model=Message)
async def delete_user(user_id: Id, admin: AdminPrincipal, gw: GatewayDep,
                      purge: Annotated[bool, Query(description="Also remove the user's history, feedback and API keys.")] = False,
                      ) -> Message:
    """Delete an account (not your own, not the last active admin: 409). By default it is anonymised: name and email
    are freed, every token and API key dies, its predictions stay for aggregate dashboards without anything tying them
    to a person; ``?purge=true`` removes the predictions, feedback and keys too."""
    if user_id == admin.user_id:
        raise Conflict("you cannot delete your own account", code="cannot_delete_self")

    def delete(db: SessionDep) -> None:
        crud.delete_user(db, get_user(user_id, admin, db), purge=purge)

    try:
        await gw.run_db(delete)
    finally:
        gw.auth.invalidate_user(user_id)
    await stored_inputs.forget_user(gw, user_id)  # uploaded inputs are personal data: gone with the account
    return Message(message=f"user {user_id} {'purged' if purge else 'deleted (anonymised)'}")
