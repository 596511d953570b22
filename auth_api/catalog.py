"""Read-through cache of model cards, labels and input contracts from the repository (the hot path must not hit the disk),
and of the version Triton serves per model (a card is only right when it is the card of the version that answers)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from auth_api.proxy.tensors import ModelSpec, spec_from_config
from mlstack.errors import MlstackError, ModelNotFound
from mlstack.repository.card import ModelCard
from mlstack.repository.config import read_config
from mlstack.repository.layout import NAME_RE, read_card, validate_name, versions

logger = logging.getLogger(__name__)
TTL_S = 2.0
SERVED_TTL_S = 2.0
"""How long the READY versions Triton reported for a model are trusted (promote/rollback/delete drop them at once)."""


class _Upstream(Protocol):
    async def request(self, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> _Answer: ...


class _Answer(Protocol):
    status: int
    content: bytes


@dataclass
class _SpecEntry:
    spec: ModelSpec
    stamp: tuple[tuple[int, ...], int]  # (versions on disk, config.pbtxt mtime): a change reloads the config
    checked: float


class Catalog:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._lock = threading.Lock()
        self._cards: dict[tuple[str, int], ModelCard | None] = {}
        self._versions: dict[str, tuple[list[int], float]] = {}
        self._specs: dict[str, _SpecEntry] = {}
        self._served: dict[str, tuple[int, float]] = {}

    async def served_version(self, name: str, upstream: _Upstream) -> int | None:
        """The version Triton answers unversioned requests with (its highest READY one), asked at most every SERVED_TTL_S;
        None when Triton does not serve the model (or cannot be asked): callers then fall back to the newest on disk."""
        hit = self._served.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[1] < SERVED_TTL_S:
            return hit[0]
        try:
            up = await upstream.request("GET", f"/v2/models/{name}")
            doc = json.loads(up.content) if up.status == 200 else {}
        except Exception as exc:  # an unreachable Triton fails the prediction itself, with its own error
            logger.debug("cannot ask Triton which %s versions are ready: %s", name, exc)
            return None
        # Model metadata without a version lists the READY versions; Triton routes to the highest.
        ready = [int(v) for v in doc.get("versions") or [] if str(v).isdigit()] if isinstance(doc, dict) else []
        if not ready:
            self._served.pop(name, None)
            return None
        self._served[name] = (max(ready), now)
        return max(ready)

    def versions(self, name: str) -> list[int]:
        hit = self._versions.get(name)
        if hit is not None and time.monotonic() - hit[1] < TTL_S:
            return hit[0]
        vs = versions(self.repo, name)
        if vs:  # names that are no model are not remembered: random names must not grow the cache
            self._versions[name] = (vs, time.monotonic())
        return vs

    def spec(self, name: str, version: str | int | None = None) -> ModelSpec:
        """The inputs ``name`` takes (its config.pbtxt, rechecked every TTL_S); ModelNotFound if it or ``version`` is absent."""
        entry = self._specs.get(name)
        now = time.monotonic()
        if entry is None or now - entry.checked >= TTL_S:
            entry = self._load_spec(name, entry, now)
        if version is not None and version != "":
            v = str(version)
            if not (v.isdigit() and not v.startswith("0") and int(v) in entry.stamp[0]):
                raise ModelNotFound(name, v[:16])
        return entry.spec

    def _load_spec(self, name: str, old: _SpecEntry | None, now: float) -> _SpecEntry:
        if not NAME_RE.fullmatch(name):
            raise ModelNotFound(name[:64])
        path = self.repo / name / "config.pbtxt"
        try:
            stamp = (tuple(versions(self.repo, name)), path.stat().st_mtime_ns)
        except OSError:
            self._specs.pop(name, None)
            raise ModelNotFound(name) from None
        if not stamp[0]:
            self._specs.pop(name, None)
            raise ModelNotFound(name)
        if old is not None and old.stamp == stamp:
            old.checked = now
            return old
        try:
            spec = spec_from_config(read_config(path), name)
        except (OSError, MlstackError) as exc:  # a config Triton could not load either: nothing to validate against
            self._specs.pop(name, None)
            raise ModelNotFound(name) from exc
        entry = _SpecEntry(spec, stamp, now)
        self._specs[name] = entry
        return entry

    def card(self, name: str, version: int | None = None) -> ModelCard:
        """The card of ``version`` (default: the newest on disk; pass ``served_version`` for the one that answers)."""
        try:
            validate_name(name)
        except Exception as exc:
            raise ModelNotFound(name) from exc
        vs = self.versions(name)
        if not vs:
            raise ModelNotFound(name)
        v = vs[-1] if version is None else version
        if v not in vs:
            raise ModelNotFound(name, version)
        key = (name, v)
        if key not in self._cards:
            try:
                card: ModelCard | None = read_card(self.repo, name, v)
            except (ModelNotFound, ValueError):
                card = None
            with self._lock:
                self._cards[key] = card
        card = self._cards[key]
        if card is None:
            raise ModelNotFound(name, v)
        return card

    def labels(self, name: str, version: str | None) -> list[str] | None:
        """Class names for a model version, from its card, else labels.txt."""
        try:
            card = self.card(name, int(version) if version and str(version).isdigit() else None)
            if card.labels:
                return list(card.labels)
        except ModelNotFound:
            pass
        path = self.repo / name / "labels.txt"
        if path.is_file():
            return [ln for ln in path.read_text().splitlines() if ln.strip()]
        return None

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._versions.clear()
                self._specs.clear()
                self._served.clear()
            else:
                self._versions.pop(name, None)
                self._specs.pop(name, None)
                self._served.pop(name, None)
