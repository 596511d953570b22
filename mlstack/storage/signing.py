"""HMAC-signed, expiring download paths for stores that cannot sign URLs themselves (the file backend)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

FILES_PATH = "/api/v1/files/"


def signature(secret: bytes, key: str, exp: int) -> str:
    return hmac.new(secret, f"{key}\n{exp}".encode(), hashlib.sha256).hexdigest()


def signed_path(secret: bytes, key: str, expires_s: int, now: float | None = None) -> str:
    """``/api/v1/files/<key>?exp=<unix s>&sig=<hex>``: good for ``expires_s`` seconds."""
    exp = int(now if now is not None else time.time()) + int(expires_s)
    return f"{FILES_PATH}{quote(key)}?exp={exp}&sig={signature(secret, key, exp)}"


def verify(secret: bytes, key: str, exp: str, sig: str, now: float | None = None) -> bool:
    """Whether ``sig`` signs ``key`` until ``exp`` and ``exp`` has not passed (compared in constant time)."""
    if not exp.isdigit() or len(exp) > 12:
        return False
    good = hmac.compare_digest(signature(secret, key, int(exp)), sig)
    return good and int(exp) >= int(now if now is not None else time.time())
