"""Reading the repository layout: model names, versions, cards."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlstack.errors import ModelNotFound, PublishError
from mlstack.repository.card import ModelCard

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
STAGING_PREFIX = ".staging-"


def validate_name(name: str) -> None:
    if not NAME_RE.fullmatch(name or ""):
        raise PublishError(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            code="invalid_model_name", details={"name": name},
        )


def versions(repo: Path, name: str) -> list[int]:
    """Published version numbers of a model, ascending (Triton's rule: numeric, no leading zero)."""
    d = Path(repo) / name
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def model_names(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir()
                  if p.is_dir() and NAME_RE.fullmatch(p.name) and (p / "config.pbtxt").is_file())


def read_card(repo: Path, name: str, version: int) -> ModelCard:
    path = Path(repo) / name / str(version) / "model_card.json"
    if not path.is_file():
        raise ModelNotFound(name, version)
    return ModelCard.model_validate(json.loads(path.read_text()))


@dataclass
class VersionInfo:
    name: str
    version: int
    card: ModelCard | None


def list_versions(repo: Path) -> list[VersionInfo]:
    out = []
    for name in model_names(repo):
        for v in versions(repo, name):
            try:
                card: ModelCard | None = read_card(repo, name, v)
            except (ModelNotFound, ValueError):
                card = None
            out.append(VersionInfo(name, v, card))
    return out
