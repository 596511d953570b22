"""Version numbers are never reused: a per-repository high-water mark of every version a model name ever had.

History rows say "model X version N"; if a deleted N came back as another artifact, those rows would lie. The mark
lives in one hidden file at the repository root (Triton only looks at folders there), written under the publish lock
by every writer (CLI, gateway, training), and it survives deleting a whole model, so a recreated name continues from
where the old one stopped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARK_FILE = ".mlstack-versions.json"


def _path(repo: Path) -> Path:
    return Path(repo) / MARK_FILE


def read_marks(repo: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"high": int, "retired": [int, ...]}}``; a missing or unreadable file is an empty mark."""
    try:
        data = json.loads(_path(repo).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # A broken mark must not stop publishing; the folders on disk still bound the next number.
        logger.warning("version mark file unreadable (%s); using the versions on disk", exc)
        return {}
    return data if isinstance(data, dict) else {}


def high_water(repo: Path, name: str) -> int:
    return int(read_marks(repo).get(name, {}).get("high", 0))


def retired(repo: Path, name: str) -> set[int]:
    return {int(v) for v in read_marks(repo).get(name, {}).get("retired", [])}


def next_version(repo: Path, name: str, on_disk: list[int]) -> int:
    """One above every version the name ever had (on disk now or recorded before)."""
    return max([high_water(repo, name), *on_disk], default=0) + 1


def record(repo: Path, name: str, used: list[int], *, retire: bool = False) -> None:
    """Raise the mark to cover ``used`` (and, when ``retire``, remember them as deleted). Call under the repo lock."""
    if not used:
        return
    marks = read_marks(repo)
    entry = marks.setdefault(name, {"high": 0, "retired": []})
    entry["high"] = max([int(entry.get("high", 0)), *used])
    if retire:
        entry["retired"] = sorted({*map(int, entry.get("retired", [])), *used})
    tmp = _path(repo).with_name(f"{MARK_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(marks, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, _path(repo))
