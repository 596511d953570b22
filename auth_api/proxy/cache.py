"""The gateway's prediction cache: whole successful v2 HTTP answers, keyed by model, version and the exact request bytes.

In process (cachetools ``TLRUCache``, bounded in bytes) by default; in Redis when ``MLSTACK_REDIS_URL`` is set, so every
gateway shares it. A model is cached when its config.pbtxt says so (``parameters`` ``mlstack_cache`` /
``mlstack_cache_ttl_s``), else when the ``gateway_prediction_cache`` setting is on. The key is (model, version,
sha256 of content type + binary header length + body); a request's own ``id`` is cut out of the key and of the stored
answer, and the asking request's id is put back on a hit, so clients that number their requests still hit.
An unversioned request is keyed by the version the repository serves and stored only when Triton's answer names that
version. Redis trouble switches the cache off for a few seconds: never a failed request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import TLRUCache
from prometheus_client import CollectorRegistry, Counter

from mlstack.repository import serving
from mlstack.repository.config import cache_policy, read_config
from mlstack.settings import Settings

logger = logging.getLogger(__name__)
POLICY_TTL_S = 2.0  # how stale a model's cache policy and live version may be (same as the catalog's)
REDIS_BACKOFF_S = 5.0  # after a Redis error, the cache is skipped this long
REDIS_PREFIX = "mlstack:pc:"
_VERSION_RE = re.compile(rb'"model_version":"([0-9]+)"')
_ID_PREFIX = b'{"id":'
_decode = json.JSONDecoder().decode


@dataclass(frozen=True)
class Answer:
    """A cached answer without its request id: the body, and its binary header length when it has binary outputs."""

    version: str
    content_type: bytes | None
    header_length: int | None
    content: bytes

    def pack(self) -> bytes:
        ct = self.content_type or b""
        return struct.pack("<HHq", len(self.version), len(ct), -1 if self.header_length is None else self.header_length) + \
            self.version.encode() + ct + self.content

    @classmethod
    def unpack(cls, raw: bytes) -> Answer:
        nv, nc, hl = struct.unpack_from("<HHq", raw)
        pos = struct.calcsize("<HHq")
        version = raw[pos:pos + nv].decode()
        ct = raw[pos + nv:pos + nv + nc] or None
        return cls(version, ct, None if hl < 0 else hl, raw[pos + nv + nc:])

    def response(self, request_id: str | None) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """ASGI headers and body of this answer for a request with ``request_id``."""
        content, hlen = self.content, self.header_length
        if request_id is not None:
            ins = _ID_PREFIX + json.dumps(request_id).encode() + b","
            content = b"{" + ins[1:] + content[1:]
            if hlen is not None:
                hlen += len(ins) - 1
        headers = [(b"content-length", str(len(content)).encode())]
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        if hlen is not None:
            headers.append((b"inference-header-content-length", str(hlen).encode()))
        return headers, content


@dataclass(frozen=True)
class Lookup:
    """What a cacheable request resolved to: where its answer lives and the id to give back."""

    model: str
    version: str  # the pinned version, else the live one
    key: str
    request_id: str | None
    ttl_s: float


def answered_version(content: bytes, header_length: int | None) -> str | None:
    """``model_version`` of a Triton answer (read before its outputs, so tensor data cannot fake it)."""
    head = content if header_length is None else content[:header_length]
    end = head.find(b'"outputs"')
    m = _VERSION_RE.search(head, 0, end if end >= 0 else len(head))
    return m.group(1).decode() if m else None


def has_outputs(content: bytes, header_length: int | None) -> bool:
    """Whether a 200 answer carries at least one output (Triton's response cache can return ``"outputs":[]``)."""
    head = content if header_length is None else content[:header_length]
    i = head.find(b'"outputs":[')
    return i >= 0 and head[i + 11:i + 12] not in (b"]", b"")


def _strip_id(content: bytes, header_length: int | None) -> tuple[bytes, int | None] | None:
    """The answer without its leading ``"id"`` member (Triton writes it first), None when it is not where expected."""
    if not content.startswith(_ID_PREFIX):
        return content, header_length
    try:
        text = content[:4096].decode()
        _, end = json.decoder.scanstring(text, len(_ID_PREFIX) + 1)  # type: ignore[attr-defined]
    except (UnicodeDecodeError, ValueError):
        return None
    end_b = len(text[:end].encode())
    if content[end_b:end_b + 1] != b",":
        return None
    cut = end_b  # bytes from after '{' to the comma, inclusive
    stripped = b"{" + content[cut + 1:]
    return stripped, None if header_length is None else header_length - cut


def request_key(body: bytes, header_length: int | None, content_type: bytes | None) -> tuple[bytes, str | None] | None:
    """(digest, the request's id) of a v2 request, the id left out of the digest; None when it cannot be cached."""
    head = body if header_length is None else body[:header_length]
    request_id = None
    if b'"id"' in head:  # rare enough to parse only then
        try:
            doc = _decode(head.decode())
        except (ValueError, UnicodeDecodeError):
            return None
        if "id" in doc:
            request_id = doc.pop("id")
            if not isinstance(request_id, str):
                return None
            head = json.dumps(doc, separators=(",", ":")).encode()
            body = head + (b"" if header_length is None else body[header_length:])
            header_length = None if header_length is None else len(head)
    h = hashlib.sha256()
    h.update(content_type or b"")
    h.update(b"\0%d\0" % (-1 if header_length is None else header_length))
    h.update(body)
    return h.digest(), request_id


def effective_policy(settings: Settings, on: bool | None, ttl_s: float | None) -> tuple[bool, float]:
    """(cached?, ttl) of a model whose config says ``on``/``ttl_s`` (None: the gateway's settings decide)."""
    return (settings.gateway_prediction_cache if on is None else on), (ttl_s or settings.gateway_prediction_cache_ttl_s)


class _Local:
    def __init__(self, max_bytes: int) -> None:
        self.data: TLRUCache[tuple[str, str, str], tuple[Answer, float]] = TLRUCache(
            maxsize=max_bytes, ttu=lambda _k, v, now: now + v[1], timer=time.monotonic, getsizeof=lambda v: len(v[0].content) + 200)

    async def get(self, model: str, version: str, key: str) -> Answer | None:
        hit = self.data.get((model, version, key))
        return hit[0] if hit else None

    async def put(self, model: str, version: str, key: str, answer: Answer, ttl_s: float) -> None:
        with contextlib.suppress(ValueError):  # larger than the whole cache
            self.data[(model, version, key)] = (answer, ttl_s)

    async def flush(self, model: str) -> int:
        gone = [k for k in list(self.data.keys()) if k[0] == model]
        for k in gone:
            self.data.pop(k, None)
        return len(gone)

    async def close(self) -> None:
        self.data.clear()


class _Redis:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis  # only when configured

        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)

    async def get(self, model: str, version: str, key: str) -> Answer | None:
        raw = await self.client.get(f"{REDIS_PREFIX}{model}:{version}:{key}")
        return Answer.unpack(raw) if raw else None

    async def put(self, model: str, version: str, key: str, answer: Answer, ttl_s: float) -> None:
        await self.client.set(f"{REDIS_PREFIX}{model}:{version}:{key}", answer.pack(), px=max(1, int(ttl_s * 1000)))

    async def flush(self, model: str) -> int:
        n = 0
        batch: list[bytes] = []
        async for k in self.client.scan_iter(match=f"{REDIS_PREFIX}{model}:*", count=1000):
            batch.append(k)
            if len(batch) >= 500:
                n += await self.client.unlink(*batch)
                batch = []
        if batch:
            n += await self.client.unlink(*batch)
        return n

    async def close(self) -> None:
        await self.client.aclose()


class CacheUnavailable(Exception):
    """The shared cache (Redis) could not be reached."""


class PredictionCache:
    """Per-gateway front of the store; ``lookup``/``get``/``put`` never raise for store trouble."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, model_label: Any = str) -> None:
        self.settings = settings
        self.repo = Path(settings.repository)
        self.store: _Local | _Redis = _Redis(settings.redis_url) if settings.redis_url else _Local(settings.gateway_prediction_cache_bytes)
        self.backend = "redis" if settings.redis_url else "memory"
        self._policies: dict[str, tuple[float, int, bool, float]] = {}  # name -> (checked, mtime, on, ttl)
        self._live: dict[str, tuple[float, str | None]] = {}
        self._down_until = 0.0
        self._model_label = model_label
        self.hits = Counter("gateway_prediction_cache_hits_total", "v2 requests answered from the prediction cache.",
                            ["model"], registry=registry)
        self.misses = Counter("gateway_prediction_cache_misses_total",
                              "v2 requests to a cached model that the prediction cache could not answer.", ["model"], registry=registry)

    # ---- policy --------------------------------------------------------------------------------------------
    def policy(self, name: str) -> tuple[bool, float]:
        """(cached?, ttl) of a model, from its config.pbtxt parameters (re-read when it changes) or the settings."""
        now = time.monotonic()
        hit = self._policies.get(name)
        if hit is not None and now - hit[0] < POLICY_TTL_S:
            return hit[2], hit[3]
        path = self.repo / name / "config.pbtxt"
        try:
            mtime = path.stat().st_mtime_ns
            if hit is not None and hit[1] == mtime:
                on, ttl = hit[2], hit[3]
            else:
                on, ttl = effective_policy(self.settings, *cache_policy(read_config(path)))
        except Exception:  # an unreadable config caches nothing; the request itself reports the model's state
            mtime, on, ttl = -1, False, 0.0
        self._policies[name] = (now, mtime, on, ttl)
        return on, ttl

    def _live_version(self, name: str) -> str | None:
        now = time.monotonic()
        hit = self._live.get(name)
        if hit is not None and now - hit[0] < POLICY_TTL_S:
            return hit[1]
        try:
            v = serving.live_version(self.repo, name)
        except Exception:
            v = None
        live = str(v) if v is not None else None
        self._live[name] = (now, live)
        return live

    # ---- hot path ------------------------------------------------------------------------------------------
    def lookup(self, name: str, version: str | None, body: bytes, header_length: int | None,
               content_type: bytes | None) -> Lookup | None:
        """Where this request's answer would be cached; None when the model is not cached (or the cache is down)."""
        on, ttl = self.policy(name)
        if not on or time.monotonic() < self._down_until:
            return None
        v = version or self._live_version(name)
        if v is None:
            return None
        k = request_key(body, header_length, content_type)
        if k is None:
            return None
        return Lookup(name, v, k[0].hex(), k[1], ttl)

    async def get(self, lk: Lookup) -> Answer | None:
        try:
            ans = await self.store.get(lk.model, lk.version, lk.key)
        except Exception as exc:
            self._failed("read", exc)
            return None
        (self.hits if ans is not None else self.misses).labels(self._model_label(lk.model)).inc()
        return ans

    async def put(self, lk: Lookup, content: bytes, header_length: int | None, content_type: bytes | None) -> None:
        """Store a 200 answer with outputs, when it came from the version the key names and is not too large."""
        if len(content) > self.settings.gateway_prediction_cache_max_entry_bytes or not has_outputs(content, header_length):
            return
        if answered_version(content, header_length) != lk.version:
            return  # Triton answered with another version (a promote in flight): not this key's answer
        stripped = _strip_id(content, header_length)
        if stripped is None:
            return
        try:
            await self.store.put(lk.model, lk.version, lk.key, Answer(lk.version, content_type, stripped[1], stripped[0]), lk.ttl_s)
        except Exception as exc:
            self._failed("write", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            logger.warning("prediction cache %s failed (%s: %s); serving without it for %.0f s", what, type(exc).__name__,
                           str(exc)[:200], REDIS_BACKOFF_S)
        self._down_until = time.monotonic() + REDIS_BACKOFF_S

    # ---- management ----------------------------------------------------------------------------------------
    def forget(self, name: str) -> None:
        """Re-read ``name``'s policy and live version at its next request (they changed)."""
        self._policies.pop(name, None)
        self._live.pop(name, None)

    async def flush(self, name: str) -> int:
        """Drop every cached answer of ``name`` in this process's store (Redis: every gateway's); CacheUnavailable when
        the shared store cannot be reached. ``auth_api.proxy.cache_admin`` reaches the other workers too."""
        self.forget(name)
        try:
            n = await self.store.flush(name)
        except Exception as exc:
            raise CacheUnavailable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        logger.info("prediction cache: flushed %d answers of %s", n, name)
        return n

    def counts(self, name: str) -> dict[str, float]:
        """This process's hits and misses for ``name``."""
        label = self._model_label(name)
        return {"hits": self.hits.labels(label)._value.get(), "misses": self.misses.labels(label)._value.get()}

    async def close(self) -> None:
        try:
            await self.store.close()
        except Exception:
            logger.debug("closing the prediction cache store failed", exc_info=True)


def open_cache(settings: Settings, registry: CollectorRegistry, model_label: Any, extras: dict[str, Any]) -> PredictionCache:
    cache = PredictionCache(settings, registry, model_label)
    extras["prediction_cache"] = cache
    return cache


def cache_of(extras: dict[str, Any]) -> PredictionCache | None:
    """The gateway's prediction cache (``Gateway.extras``), None before the lifespan opened it."""
    c = extras.get("prediction_cache")
    return c if isinstance(c, PredictionCache) else None
