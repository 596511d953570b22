"""Passwords (argon2), JWTs (authlib, HS256 only), API keys (prefix + sha256 of a high-entropy secret)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid
import warnings
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

with warnings.catch_warnings():
    # authlib.jose is deprecated in favour of joserfc but is what this project pins; the API is stable until authlib 2.
    warnings.simplefilter("ignore")
    from authlib.jose import JoseError, JsonWebToken

from auth_api.core.errors import Unauthorized
from mlstack.private import private_dir, private_file
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

# parallelism=1: libargon2 runs one thread per lane, so argon2-cffi's default of 4 made every hash take 4 cores at once
# and no pool size could bound the CPU logins use. Time and memory cost stay at argon2-cffi's defaults (RFC 9106's
# second recommendation: t=3, 64 MiB). Hashes stored with other parameters still verify and are rehashed at login.
_hasher = PasswordHasher(parallelism=1)
# Only HS256 is accepted: "none" and every other algorithm are refused at decode time.
_jwt = JsonWebToken(["HS256"])
API_KEY_PREFIX = "mlk_"
MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL): a larger user id cannot exist
MAX_TIME = 2**53  # NumericDate bound: beyond it timestamps lose precision and datetime overflows
# A real argon2 hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def needs_rehash(password_hash: str) -> bool:
    """True for a hash made with other parameters than new hashes get (e.g. the former parallelism=4)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):  # "!deleted" and other markers are not hashes: nothing to upgrade
        return False


def verify_password(password: str, password_hash: str | None) -> bool:
    """False for no hash or a marker that is not one (a deleted account's ``!deleted``), after the same argon2 work."""
    real = password_hash if password_hash is not None and password_hash.startswith("$argon2") else None
    try:
        return _hasher.verify(real or _DUMMY_HASH, password) and real is not None
    except (VerificationError, InvalidHashError):
        return False


def load_jwt_key(settings: Settings) -> bytes:
    """The key from MLSTACK_JWT_SECRET, else ``var_dir/jwt.key`` (created 0600 on first start)."""
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value().encode()
    path = private_dir(settings.var_dir) / "jwt.key"
    if path.exists():
        private_file(path)  # a key copied in by hand (or by an older version) may be world-readable
    else:
        # Written in full to a private temp file, then hard-linked into place: link() fails if another process won the
        # race, and nobody can ever read a half-written key.
        tmp = path.with_name(f".jwt.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_urlsafe(48).encode())
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                logger.info("generated a new JWT signing key at %s", path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} holds a key shorter than 32 bytes; delete it to generate a new one")
    return key


class TokenCodec:
    """Encode/decode access and refresh tokens with one key."""

    def __init__(self, key: bytes, access_ttl_s: int, refresh_ttl_s: int):
        self._key = key
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s

    @property
    def code_key(self) -> bytes:
        """The key mailed one-time codes are hashed with (derived, so it never equals the signing key)."""
        return hmac.new(self._key, b"mlstack account codes", hashlib.sha256).digest()

    def _encode(self, claims: dict[str, Any]) -> str:
        return _jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key).decode()

    def access_token(self, user_id: int, username: str, role: str, token_version: int = 0) -> str:
        """``role`` and ``name`` are informational for clients; authorization reads the live account.

        ``tv`` is the account's token version when issued: a password change or deactivation bumps it, which ends
        every access token issued before.
        """
        now = int(time.time())
        return self._encode({"sub": str(user_id), "name": username, "role": role, "typ": "access", "tv": token_version,
                             "iat": now, "exp": now + self.access_ttl_s, "jti": uuid.uuid4().hex})

    def refresh_token(self, user_id: int, token_version: int = 0) -> tuple[str, str, int]:
        """(token, jti, exp)."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        exp = now + self.refresh_ttl_s
        return self._encode({"sub": str(user_id), "typ": "refresh", "tv": token_version, "iat": now, "exp": exp,
                             "jti": jti}), jti, exp

    def decode(self, token: str, typ: str) -> dict[str, Any]:
        """Verified claims; Unauthorized with a reason (malformed, bad_signature, expired, wrong_type)."""
        try:
            claims = _jwt.decode(token, self._key)
        except Exception as exc:  # untrusted bytes: whatever the parser trips on, the answer is 401
            reason = "bad_signature" if "signature" in str(exc).lower() else "malformed_token"
            raise Unauthorized("invalid token", code=reason) from exc
        try:
            claims.validate(leeway=0)
        except JoseError as exc:
            code = "token_expired" if "expired" in str(exc).lower() else "invalid_claims"
            raise Unauthorized("token expired" if code == "token_expired" else "invalid token claims", code=code) from exc
        if claims.get("typ") != typ:
            raise Unauthorized("wrong token type", code="wrong_token_type")
        out = dict(claims)
        if not _valid_claims(out, typ):
            raise Unauthorized("invalid token claims", code="invalid_claims")
        return out


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _valid_claims(claims: dict[str, Any], typ: str) -> bool:
    """Every claim the gateway reads has the type it expects (signed by us, but never trusted to be well-formed)."""
    sub = claims.get("sub")
    if not (isinstance(sub, str) and sub.isascii() and sub.isdigit() and len(sub) <= 10 and _is_int(int(sub), 1, MAX_ID)):
        return False
    if not (_is_int(claims.get("exp"), 0, MAX_TIME) and _is_int(claims.get("iat"), 0, MAX_TIME)):
        return False
    if not isinstance(claims.get("jti"), str):
        return False
    if typ == "access":
        return (_is_int(claims.get("tv"), 0, MAX_ID) and isinstance(claims.get("role"), str)
                and isinstance(claims.get("name"), str))
    return "tv" not in claims or _is_int(claims["tv"], 0, MAX_ID)


def new_api_key() -> tuple[str, str, str]:
    """(full key, lookup prefix, sha256 of the secret part). The full key is shown once."""
    prefix = API_KEY_PREFIX + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{prefix}.{secret}", prefix, hash_api_secret(secret)


def hash_api_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(API_KEY_PREFIX) or "." not in key:
        return None
    prefix, _, secret = key.partition(".")
    return (prefix, secret) if prefix and secret else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_secret(secret), stored_hash)
