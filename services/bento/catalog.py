"""What the task service knows about the repository: which version serves a model, its card, its folder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlstack.errors import ModelNotFound
from mlstack.repository import config as cfgmod
from mlstack.repository.card import ModelCard
from mlstack.repository.layout import model_names, read_card, versions
from services.bento.errors import UnsupportedModel
from services.bento.runners import loaded_versions


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    card: ModelCard
    path: Path
    inputs: tuple[str, ...] = ("input",)
    # Output role the tasks read (label, probabilities, value, scores) -> the graph's own output name.
    roles: tuple[tuple[str, str], ...] = ()

    @property
    def input_name(self) -> str:
        """The one input a task feeds (uploaded models call it what their exporter did, e.g. skl2onnx's ``X``)."""
        if len(self.inputs) != 1:
            raise UnsupportedModel(f"model '{self.name}' takes {len(self.inputs)} inputs ({', '.join(self.inputs)}); "
                                   "tasks feed models with exactly one", details={"model": self.name, "inputs": list(self.inputs)})
        return self.inputs[0]

    def by_role(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs renamed to the roles the task code reads; names already matching a role pass through."""
        out = dict(outputs)
        for role, actual in self.roles:
            if actual in outputs:
                out[role] = outputs[actual]
        return out


def output_roles(cfg: Any, task: str) -> tuple[tuple[str, str], ...]:
    """Which output is the label, the probabilities, the value or the scores: by the project's names first, then by type.

    skl2onnx names a classifier's outputs ``output_label``/``output_probability`` and a regressor's ``variable``.
    """
    names = [t.name for t in cfg.output]
    ints = [t.name for t in cfg.output if cfgmod.numpy_dtype(t.data_type).startswith("int")]
    floats = [t.name for t in cfg.output if cfgmod.numpy_dtype(t.data_type).startswith("float")]

    def pick(role: str, pool: list[str]) -> list[tuple[str, str]]:
        if role in names:
            return [(role, role)]
        return [(role, pool[0])] if pool else []

    if task == "classification":
        return tuple(pick("label", ints) + pick("probabilities", floats))
    if task == "anomaly_detection":
        return tuple(pick("label", ints) + pick("scores", floats))
    return tuple(pick("value", floats))


class Catalog:
    """Resolves (model, version) the way Triton does (version_policy, highest loaded); cards are cached (versions never change)."""

    def __init__(self, repository: Path) -> None:
        self.repository = Path(repository)
        self._cards: dict[tuple[str, int], ModelCard] = {}
        self._lock = threading.Lock()

    def _config(self, name: str) -> Any | None:
        path = self.repository / name / "config.pbtxt"
        try:
            return cfgmod.read_config(path)
        except FileNotFoundError:
            return None

    def served_versions(self, name: str) -> list[int]:
        cfg = self._config(name)
        return [] if cfg is None else loaded_versions(cfg, versions(self.repository, name))

    def resolve(self, name: str, version: int | None = None) -> Resolved:
        cfg = self._config(name)
        if cfg is None:
            raise ModelNotFound(name, version)
        served = loaded_versions(cfg, versions(self.repository, name))
        if not served or (version is not None and version not in served):
            raise ModelNotFound(name, version)
        v = version if version is not None else served[-1]
        card = self.card(name, v)
        return Resolved(name, v, card, self.repository / name / str(v), inputs=tuple(t.name for t in cfg.input),
                        roles=output_roles(cfg, card.task))

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
                "explainable": bool(card.feature_names),
                "metrics": card.metrics,
            })
        return out
