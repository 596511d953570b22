"""Usernames and emails: NFKC-normalised, unique case-insensitively through a casefolded lookup key.

Confusables are refused by restricting usernames to ASCII ``[a-z0-9._-]`` (after NFKC, case-insensitive), 3-32
characters starting with a letter or digit: no Cyrillic ``а`` posing as ``a``, no fullwidth or zero-width
characters. Within ASCII, ``I``/``l`` collapse under casefolding; ``rn``/``m``-style lookalikes are not checked.
"""

from __future__ import annotations

import re
import unicodedata

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")
USERNAME_RULE = "3-32 characters from a-z, 0-9, '.', '_', '-' (case-insensitive), starting with a letter or digit"
MAX_LOGIN_KEY = 254  # the longest email
# A deleted account's name (and key): '~' is outside every username alphabet this project ever accepted, so no account,
# new or old, can hold it and block the deletion (the 0003 migration's ``name~id`` keys never start with '~').
ANONYMISED_PREFIX = "~deleted-"


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def lookup_key(text: str) -> str:
    """The case-insensitive key both usernames and emails are unique on."""
    return normalize(text).casefold()


def clean_username(name: str) -> str:
    """The stored form (NFKC, case kept for display); ValueError when it is not an acceptable username."""
    norm = normalize(name)
    if not norm.isascii() or not USERNAME_RE.fullmatch(norm.lower()):
        raise ValueError(f"username must be {USERNAME_RULE}")
    return norm


def anonymised_name(user_id: int) -> str:
    return f"{ANONYMISED_PREFIX}{user_id}"


def login_key(name: str) -> str:
    """The key a login attempt is looked up (and throttled) under; bounded so junk input cannot grow the key."""
    return lookup_key(name)[:MAX_LOGIN_KEY]


def is_email(login: str) -> bool:
    """Usernames cannot contain '@', so a login name with one is an email."""
    return "@" in login


def clean_email(email: str) -> str:
    return normalize(email)
