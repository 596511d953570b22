"""What the task service knows about the repository: which version serves a model, its card, its folder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlstack.errors import ModelNotFound
from mlstack.repository import config as cfgmod
from mlstack.repository.card import ModelCard
from mlstack.repository.layout import model_names, read_card, versions
from services.bento.runners import loaded_versions


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    card: ModelCard
    path: Path


class Catalog:
    """Resolves (model, version) the way Triton does (version_policy, highest loaded); cards are cached (versions never change)."""

    def __init__(self, repository: Path) -> None:
        self.repository = Path(repository)
        self._cards: dict[tuple[str, int], ModelCard] = {}
        self._lock = threading.Lock()

    def served_versions(self, name: str) -> list[int]:
        path = self.repository / name / "config.pbtxt"
        if not path.is_file():
            return []
        return loaded_versions(cfgmod.read_config(path), versions(self.repository, name))

    def resolve(self, name: str, version: int | None = None) -> Resolved:
        served = self.served_versions(name)
        if not served or (version is not None and version not in served):
            raise ModelNotFound(name, version)
        v = version if version is not None else served[-1]
        return Resolved(name, v, self.card(name, v), self.repository / name / str(v))

    def card(self, name: str, version: int) -> ModelCard:
        key = (name, version)
        with self._lock:
            if key not in self._cards:
                self._cards[key] = read_card(self.repository, name, version)
            return self._cards[key]

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for name in model_names(self.repository):
            served = self.served_versions(name)
            if not served:
                continue
            card = self.card(name, served[-1])
            out.append({
                "name": name, "version": served[-1], "versions": served, "task": card.task,
                "description": card.description, "algorithm": card.algorithm,
                "feature_names": card.feature_names, "labels": card.labels,
                "image": bool((card.preprocessing or {}).get("image")),
                "explainable": (self.repository / name / str(served[-1]) / "background.npy").is_file(),
                "metrics": card.metrics,
            })
        return out
