"""Which version Triton serves: promote, roll back, delete, and read the live version from config.pbtxt.

Promotion rewrites ``version_policy`` to ``specific { versions: [v] }`` atomically (temp file + rename), so Triton in
poll mode loads the new version before unloading the old one and no request fails. Shared by the CLI and the gateway.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mlstack.errors import MlstackError, ModelNotFound
from mlstack.repository import config as cfgmod
from mlstack.repository import marks, remote
from mlstack.repository.layout import STAGING_PREFIX, versions
from mlstack.repository.publish import _fsync_dir, _repo_lock

logger = logging.getLogger(__name__)


class VersionIsLive(MlstackError):
    """Deleting the version Triton serves would take the model down."""

    code = "version_is_live"
    status = 409


class NoPreviousVersion(MlstackError):
    code = "no_previous_version"
    status = 409


def _model_dir(repo: Path, name: str) -> Path:
    d = Path(repo) / name
    if not (d / "config.pbtxt").is_file():
        raise ModelNotFound(name)
    return d


def live_versions(repo: Path, name: str) -> list[int]:
    """Versions the config's version_policy selects among those on disk (Triton's rule), ascending."""
    d = _model_dir(repo, name)
    on_disk = versions(repo, name)
    policy = cfgmod.read_config(d / "config.pbtxt").version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return on_disk
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in on_disk if v in wanted]
    n = policy.latest.num_versions if kind == "latest" else 1
    return on_disk[-max(n, 1):] if on_disk else []


def live_version(repo: Path, name: str) -> int | None:
    """The version an unversioned request reaches (the highest live one), None if nothing is served."""
    live = live_versions(repo, name)
    return live[-1] if live else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _set_policy(model_dir: Path, version: int) -> None:
    for path in (model_dir / "config.pbtxt", model_dir / "configs" / "gpu.pbtxt"):
        if not path.is_file():
            continue
        cfg = cfgmod.read_config(path)
        cfg.version_policy.Clear()
        cfg.version_policy.specific.versions.append(version)
        _write_atomic(path, cfgmod.dumps(cfg))


def promote(repo: Path, name: str, version: int) -> int | None:
    """Serve ``version`` (and only it); returns the version served before."""
    repo = Path(repo)
    d = _model_dir(repo, name)
    with _repo_lock(repo):
        if version not in versions(repo, name):
            raise ModelNotFound(name, version)
        before = live_version(repo, name)
        _set_policy(d, version)
        remote.push(repo, name)
    logger.info("promoted %s version %d (was %s)", name, version, before)
    return before


def rollback(repo: Path, name: str, to_version: int | None = None) -> tuple[int | None, int]:
    """Serve the version below the live one (or ``to_version``); returns (from, to)."""
    repo = Path(repo)
    _model_dir(repo, name)
    current = live_version(repo, name)
    if to_version is None:
        older = [v for v in versions(repo, name) if current is None or v < current]
        if not older:
            raise NoPreviousVersion(f"{name} has no version older than {current} to roll back to; promote a newer one, "
                                    "or delete the whole model to stop serving it",
                                    details={"model": name, "live": current, "versions": versions(repo, name),
                                             "delete_model": f"DELETE /api/v1/models/{name}?confirm={name}"})
        to_version = older[-1]
    promote(repo, name, to_version)
    return current, to_version


def delete_version(repo: Path, name: str, version: int) -> None:
    """Remove a version folder; the live version is refused. The folder disappears with one rename."""
    repo = Path(repo)
    d = _model_dir(repo, name)
    with _repo_lock(repo):
        if version not in versions(repo, name):
            raise ModelNotFound(name, version)
        if version in live_versions(repo, name):
            others = [v for v in versions(repo, name) if v != version]
            hint = (f"promote another version ({', '.join(map(str, others))}) first" if others else
                    "it is the only version: delete the whole model instead")
            raise VersionIsLive(f"{name} version {version} is live; {hint}",
                                details={"model": name, "version": version, "other_versions": others,
                                         "delete_model": f"DELETE /api/v1/models/{name}?confirm={name}"})
        marks.record(repo, name, [version], retire=True)
        trash = d / f"{STAGING_PREFIX}{os.getpid()}-deleted-{version}"
        os.rename(d / str(version), trash)
        _fsync_dir(d)
        remote.push(repo, name)
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("deleted %s version %d", name, version)


def delete_model(repo: Path, name: str) -> list[int]:
    """Remove a whole model (every version); returns the versions removed. Triton (poll mode) unloads it.

    The folder leaves the repository with one rename, so a polling server never sees a model without versions;
    the version mark keeps its numbers, so a model recreated under the name does not reuse them.
    """
    repo = Path(repo)
    d = _model_dir(repo, name)
    with _repo_lock(repo):
        removed = versions(repo, name)
        marks.record(repo, name, removed, retire=True)
        # Beside the repository when on the same filesystem (Triton never sees it), else hidden inside it.
        parent = repo.parent if os.stat(repo.parent).st_dev == os.stat(repo).st_dev else repo
        trash = parent / f"{STAGING_PREFIX}{os.getpid()}-deleted-{name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(d, trash)
        _fsync_dir(repo)
        remote.push(repo, name)
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("deleted model %s (versions %s)", name, removed)
    return removed


__all__ = ["NoPreviousVersion", "VersionIsLive", "delete_model", "delete_version", "live_version", "live_versions", "promote", "rollback"]
