"""The recipe contract: a recipe trains a native model and hands back its ONNX export plus what parity needs.

Output naming convention (every recipe, so every client reads the same names):
- input:  ``input`` (FP32, batch first);
- classifiers: ``label`` (INT64 [N]) and ``probabilities`` (FP32 [N, C]); ``labels.txt`` names the classes;
- regressors: ``value`` (FP32 [N, 1]);
- anomaly detectors: ``label`` (INT64 [N], -1 anomaly / 1 normal) and ``scores`` (FP32 [N, 1],
  ``decision_function``: lower = more anomalous).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mlstack.repository.card import ModelCard

Report = Callable[[str], None]
"""Progress sink: recipes call it with one line per epoch or step."""


@dataclass
class TrainResult:
    """What a recipe produces. ``native`` maps ONNX output names to the native model's outputs on ``x_test``."""

    name: str
    onnx_bytes: bytes
    card: ModelCard
    x_test: np.ndarray
    native: dict[str, np.ndarray]
    labels: list[str] | None = None
    label_output: str | None = None
    tolerance: float = 1e-4
    extra_files: dict[str, bytes] = field(default_factory=dict)


class Recipe(Protocol):
    name: str

    def train(self, report: Report) -> TrainResult: ...


def git_revision() -> str | None:
    """Commit of the training code (with '-dirty' when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")
