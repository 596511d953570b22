"""The password policy: at least 10 characters, not the username or email, not a common password (list shipped in
auth_api/data/common-passwords.txt, compared case-insensitively)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from auth_api.core.errors import InvalidInput

MIN_LENGTH = 10
MAX_LENGTH = 256


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("auth_api.data").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def problem(password: str, username: str | None = None, email: str | None = None) -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    folded = password.strip().casefold()
    if folded in common_passwords():
        return "password is too common; choose one that is not on lists of frequently used passwords"
    for ident in (username, email, email.split("@", 1)[0] if email else None):
        if ident and folded == ident.strip().casefold():
            return "password must not be the username or the email"
    return None


def check(password: str, username: str | None = None, email: str | None = None) -> None:
    """InvalidInput (422 ``weak_password``) when the policy refuses ``password``."""
    why = problem(password, username, email)
    if why is not None:
        raise InvalidInput(why, code="weak_password", details={"min_length": MIN_LENGTH})
