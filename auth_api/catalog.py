"""Read-through cache of model cards and labels from the repository (the hot path must not hit the disk)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mlstack.errors import ModelNotFound
from mlstack.repository.card import ModelCard
from mlstack.repository.layout import read_card, validate_name, versions

TTL_S = 2.0


class Catalog:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._lock = threading.Lock()
        self._cards: dict[tuple[str, int], ModelCard | None] = {}
        self._versions: dict[str, tuple[list[int], float]] = {}

    def versions(self, name: str) -> list[int]:
        hit = self._versions.get(name)
        if hit is not None and time.monotonic() - hit[1] < TTL_S:
            return hit[0]
        vs = versions(self.repo, name)
        self._versions[name] = (vs, time.monotonic())
        return vs

    def card(self, name: str, version: int | None = None) -> ModelCard:
        """The card of ``version`` (default: the newest on disk); ModelNotFound if absent."""
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
            else:
                self._versions.pop(name, None)
