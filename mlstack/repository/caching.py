"""A model's prediction-cache policy (the gateway's cache, on/off and TTL), kept in its config.pbtxt ``parameters``.

Read and written here for the CLI (``mlstack cache``) and the gateway (``PUT /api/v1/models/{name}/cache``) alike: the
config is rewritten atomically (temp file + rename) under the repository lock, and only when the policy changes.
Triton and its backends ignore these keys, but a polling Triton reloads a model whose config file changed: the same
version is loaded beside the serving one and swapped in, so requests keep being answered (tests/repository).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mlstack.errors import MlstackError
from mlstack.repository import config as cfgmod
from mlstack.repository import remote
from mlstack.repository.publish import _repo_lock
from mlstack.repository.serving import _model_dir, _write_atomic

MAX_TTL_S = 30 * 86400.0


class InvalidCachePolicy(MlstackError):
    code = "invalid_cache_policy"
    status = 422


@dataclass(frozen=True)
class CachePolicy:
    """What the model's config says; None where it says nothing (the gateway's settings decide)."""

    enabled: bool | None
    ttl_s: float | None


def read_policy(repo: Path, name: str) -> CachePolicy:
    return CachePolicy(*cfgmod.cache_policy(cfgmod.read_config(_model_dir(repo, name) / "config.pbtxt")))


def check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise InvalidCachePolicy(f"ttl_s must be a number of seconds above 0 and at most {MAX_TTL_S:g}",
                                 details={"field": "ttl_s", "value": ttl_s if math.isfinite(ttl_s) else str(ttl_s),
                                          "max": MAX_TTL_S})


def set_policy(repo: Path, name: str, enabled: bool | None, ttl_s: float | None) -> tuple[CachePolicy, bool]:
    """Write ``enabled`` and ``ttl_s`` (None: remove the parameter, the gateway default applies) into the model's
    configs; returns (the policy now, whether a file changed)."""
    check_ttl(ttl_s)
    repo = Path(repo)
    d = _model_dir(repo, name)
    changed = False
    with _repo_lock(repo):
        for path in (d / "config.pbtxt", d / "configs" / "gpu.pbtxt"):
            if not path.is_file():
                continue
            before = path.read_text()
            cfg = cfgmod.loads(before)
            cfgmod.set_cache_policy(cfg, enabled, ttl_s)
            after = cfgmod.dumps(cfg)
            if after != before:  # an unchanged file keeps Triton from reloading the model for nothing
                _write_atomic(path, after)
                changed = True
        if changed:
            remote.push(repo, name)
    return read_policy(repo, name), changed
