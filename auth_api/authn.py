"""Who is calling: JWT access tokens and API keys resolved to a Principal, with small caches for the hot path.

The role, name and active flag of a Principal come from the live account (accounts.AccountCache), never from token
claims; a token is also refused once its account's token version moved on (password change, deactivation).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth_api import crud
from auth_api.accounts import Account, AccountCache, Invalidations, LocalInvalidations
from auth_api.core.errors import Unauthorized
from auth_api.core.metrics import GatewayMetrics
from auth_api.core.security import TokenCodec, secret_matches, split_api_key
from auth_api.models import utcnow
from auth_api.roles import ROLE_RANK

KEY_CACHE_TTL_S = 5.0
TOUCH_EVERY_S = 30.0


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or the anonymous one when anonymous inference is enabled)."""

    kind: str  # "user" | "api_key" | "anonymous"
    user_id: int | None
    username: str
    role: str
    api_key_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_version: int | None = None  # of the access token that authenticated the caller (None for API keys)

    @cached_property
    def bucket(self) -> str:
        return f"k:{self.api_key_id}" if self.api_key_id is not None else f"u:{self.user_id}"

    def at_least(self, role: str) -> bool:
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[role]


ANONYMOUS = Principal(kind="anonymous", user_id=None, username="anonymous", role="anonymous")


@dataclass
class _TokenEntry:
    user_id: int
    token_version: int
    exp: float
    account: Account | None = None  # the account state ``principal`` was built from
    principal: Principal | None = None


@dataclass
class _KeyEntry:
    key_id: int
    secret_hash: str
    owner_id: int
    revoked: bool
    expires_at: datetime | None
    scopes: frozenset[str]
    fetched: float


class Authenticator:
    """Resolves credentials; JWT signatures are verified once and cached until expiry, API keys for a few seconds,
    accounts for ``account_ttl_s`` (and dropped at once by ``invalidate_user``/``forget_key``)."""

    def __init__(self, engine: Engine, codec: TokenCodec, metrics: GatewayMetrics, cache_size: int = 10_000,
                 account_ttl_s: float = 1.0, invalidations: Invalidations | None = None):
        self.engine = engine
        self.codec = codec
        self.metrics = metrics
        self.cache_size = cache_size
        self.accounts = AccountCache(engine, ttl_s=account_ttl_s)
        self.invalidations: Invalidations = invalidations or LocalInvalidations()
        self.invalidations.subscribe(self._on_invalidation)
        self._jwt_cache: OrderedDict[str, _TokenEntry] = OrderedDict()
        self._keys: dict[str, _KeyEntry] = {}
        self._touched: dict[int, float] = {}
        self._key_generation = 0  # a key read that started before a revocation is used once, not cached

    def invalidate_user(self, user_id: int) -> None:
        """Announce that an account changed (role, active flag, password, keys): cached copies are dropped at once."""
        self.invalidations.publish("user", str(user_id))

    def forget_key(self, prefix: str) -> None:
        """Announce a revoked key (revocation takes effect immediately)."""
        self.invalidations.publish("api_key", prefix)

    def _on_invalidation(self, kind: str, ident: str) -> None:
        if kind == "user":
            self.accounts.drop(int(ident))
        elif kind == "api_key":
            self._key_generation += 1
            self._keys.pop(ident, None)

    async def _live(self, user_id: int) -> Account:
        acct = await self.accounts.get(user_id)
        if not acct.is_active:
            raise self.fail("inactive_user", "account disabled")
        return acct

    def fail(self, reason: str, message: str) -> Unauthorized:
        self.metrics.auth_failures.labels(reason).inc()
        return Unauthorized(message, code=reason)

    async def resolve(self, authorization: str | None, x_api_key: str | None) -> Principal | None:
        """The caller, None when no credentials were sent; Unauthorized when they are wrong."""
        if x_api_key:
            return await self._api_key(x_api_key.strip())
        if not authorization:
            return None
        scheme, _, cred = authorization.partition(" ")
        cred = cred.strip()
        if scheme.lower() != "bearer" or not cred:
            raise self.fail("bad_scheme", "use 'Authorization: Bearer <token or API key>'")
        if split_api_key(cred) is not None:
            return await self._api_key(cred)
        return await self._jwt(cred)

    async def _jwt(self, token: str) -> Principal:
        hit = self._jwt_cache.get(token)
        if hit is None or hit.exp <= time.time():
            try:
                claims = self.codec.decode(token, "access")
            except Unauthorized as exc:
                self.metrics.auth_failures.labels(exc.code).inc()
                raise
            hit = _TokenEntry(user_id=int(claims["sub"]), token_version=int(claims["tv"]), exp=float(claims["exp"]))
            self._jwt_cache[token] = hit
            if len(self._jwt_cache) > self.cache_size:
                self._jwt_cache.popitem(last=False)
        acct = await self._live(hit.user_id)
        if acct.token_version != hit.token_version:
            raise self.fail("token_revoked", "this token was issued before the account's credentials changed; log in again")
        p = hit.principal
        if p is None or hit.account is not acct:
            p = Principal(kind="user", user_id=acct.user_id, username=acct.username, role=acct.role,
                          token_version=hit.token_version)
            hit.account, hit.principal = acct, p
        return p

    async def _api_key(self, key: str) -> Principal:
        parts = split_api_key(key)
        if parts is None:
            raise self.fail("malformed_api_key", "malformed API key")
        prefix, secret = parts
        entry = self._keys.get(prefix)
        if entry is None or time.monotonic() - entry.fetched > KEY_CACHE_TTL_S:
            generation = self._key_generation
            entry = await run_in_threadpool(self._load_key, prefix)
            if entry is not None and generation == self._key_generation:
                self._keys[prefix] = entry
                if len(self._keys) > self.cache_size:
                    self._keys.pop(next(iter(self._keys)))
        if entry is None or not secret_matches(secret, entry.secret_hash):
            raise self.fail("unknown_api_key", "invalid API key")
        if entry.revoked:
            raise self.fail("revoked_api_key", "API key revoked")
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            raise self.fail("expired_api_key", "API key expired")
        owner = await self._live(entry.owner_id)
        mono = time.monotonic()
        if mono - self._touched.get(entry.key_id, 0.0) > TOUCH_EVERY_S:
            self._touched[entry.key_id] = mono
            await run_in_threadpool(self._touch, entry.key_id)
        return Principal(kind="api_key", user_id=entry.owner_id, username=owner.username, role=owner.role,
                         api_key_id=entry.key_id, scopes=entry.scopes)

    def _load_key(self, prefix: str) -> _KeyEntry | None:
        with Session(self.engine) as db:
            key = crud.get_api_key_by_prefix(db, prefix)
            if key is None or key.id is None:
                return None
            return _KeyEntry(key_id=key.id, secret_hash=key.secret_hash, owner_id=key.owner_id, revoked=key.revoked_at is not None,
                             expires_at=key.expires_at, scopes=frozenset(key.scopes or []), fetched=time.monotonic())

    def _touch(self, key_id: int) -> None:
        with Session(self.engine) as db:
            crud.touch_api_key(db, key_id, utcnow())


def claims_summary(p: Principal) -> dict[str, Any]:
    return {"kind": p.kind, "user_id": p.user_id, "username": p.username, "role": p.role, "api_key_id": p.api_key_id}
