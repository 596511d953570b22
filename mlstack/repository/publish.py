"""Validate and atomically publish a model version into the repository.

A version is staged in a hidden folder, validated, fsynced, then renamed into place, so a
server polling the repository never sees half a version; ``rename`` onto an existing
version fails, so a version is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from mlstack.errors import PublishError, VersionExists
from mlstack.repository import config as cfgmod
from mlstack.repository import marks, remote
from mlstack.repository.card import ModelCard, TensorSchema
from mlstack.repository.layout import NAME_RE, STAGING_PREFIX, validate_name, versions
from mlstack.repository.sandbox import SandboxLimits, refuse_external_data, sanitize, smoke_run

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """Everything a version consists of, before it is written."""

    name: str
    onnx_bytes: bytes
    card: ModelCard
    labels: list[str] | None = None
    label_output: str | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Published:
    name: str
    version: int
    path: Path
    card: ModelCard


def load_onnx(data: bytes) -> onnx.ModelProto:
    """Parse and check an ONNX file; anything else (or a model referencing external files) is refused."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PublishError("file is not an ONNX model", code="not_onnx", details={"reason": sanitize(str(exc))}) from exc
    if not model.graph.node and not model.graph.output:
        raise PublishError("file is not an ONNX model (empty graph)", code="not_onnx")
    # Before the checker: it looks external files up, and its answers would tell whether a path exists.
    refuse_external_data(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise PublishError(
            "ONNX checker rejected the model", code="invalid_onnx", details={"reason": sanitize(str(exc))}
        ) from exc
    return model


def _schema(cfg: cfgmod.ModelConfig, tensors) -> list[TensorSchema]:
    batch = [-1] if cfg.max_batch_size > 0 else []
    out = []
    for t in tensors:
        dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
        out.append(TensorSchema(name=t.name, datatype=cfgmod.dtype_name(t.data_type), shape=batch + dims))
    return out


def build_config(cand: Candidate, model: onnx.ModelProto, *, max_batch_size: int, instance_count: int,
                 max_queue_delay_us: int, kind: str = "KIND_CPU", version_policy_latest: int = 1) -> cfgmod.ModelConfig:
    return cfgmod.config_from_onnx(
        model, cand.name, max_batch_size=max_batch_size, instance_count=instance_count,
        instance_kind=kind, max_queue_delay_us=max_queue_delay_us,
        label_output=cand.label_output if cand.labels else None, num_versions=version_policy_latest,
    )


@contextlib.contextmanager
def _repo_lock(repo: Path) -> Iterator[None]:
    """Serialise publishers (CLI, API) on one repository; a plain file Triton ignores."""
    repo.mkdir(parents=True, exist_ok=True)
    with open(repo / ".mlstack.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_stale_staging(folder: Path) -> None:
    """Remove staging folders left by publishers that died (their pid is gone)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if not p.name.startswith(STAGING_PREFIX):
            continue
        try:
            pid = int(p.name[len(STAGING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p, ignore_errors=True)


def publish(
    repo: Path,
    cand: Candidate,
    *,
    version: int | None = None,
    max_batch_size: int = 64,
    instance_count: int = 1,
    max_queue_delay_us: int = 0,
    version_policy_latest: int = 1,
    sandbox: SandboxLimits | None = None,
) -> Published:
    """Validate ``cand`` and publish it as version ``version`` (default: latest + 1)."""
    validate_name(cand.name)
    if version is not None and version < 1:
        raise PublishError(f"version must be an integer >= 1, got {version}", code="invalid_version")
    model = load_onnx(cand.onnx_bytes)
    cfg = build_config(cand, model, max_batch_size=max_batch_size, instance_count=instance_count,
                       max_queue_delay_us=max_queue_delay_us, version_policy_latest=version_policy_latest)
    smoke_run(cand.onnx_bytes, cfg, sandbox)
    if cand.labels and cfg.max_batch_size > 0:
        lab = next(t for t in cfg.output if t.name == cand.label_output)
        if list(lab.dims) != [len(cand.labels)]:
            raise PublishError(f"{len(cand.labels)} labels for output '{lab.name}' of dims {list(lab.dims)}",
                               code="labels_mismatch")

    card = cand.card.model_copy(deep=True)
    card.name = cand.name
    card.inputs = _schema(cfg, cfg.input)
    card.outputs = _schema(cfg, cfg.output)
    card.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    card.onnx_sha256 = hashlib.sha256(cand.onnx_bytes).hexdigest()
    if cand.labels:
        card.labels = list(cand.labels)
    card.files = sorted(cand.extra_files)

    repo = Path(repo)
    with _repo_lock(repo):
        model_dir = repo / cand.name
        existing = versions(repo, cand.name)
        if model_dir.exists():
            _check_compatible(model_dir, cfg)
            _clean_stale_staging(model_dir)
        if version is not None and version in existing:
            raise VersionExists(f"{cand.name} version {version} already exists; versions are never overwritten",
                                details={"model": cand.name, "version": version})
        if version is not None and version in marks.retired(repo, cand.name):
            raise VersionExists(f"{cand.name} version {version} was deleted; version numbers are never reused",
                                code="version_retired", details={"model": cand.name, "version": version})
        new_version = version if version is not None else marks.next_version(repo, cand.name, existing)
        card.version = new_version
        if model_dir.exists():
            path = _stage_version(model_dir, new_version, cand, card)
        else:
            path = _stage_new_model(repo, cfg, new_version, cand, card)
        marks.record(repo, cand.name, [new_version])
        remote.push(repo, cand.name)  # an s3:// repository: the bucket gets it in Triton-safe order (no-op locally)
    logger.info("published %s version %d", cand.name, new_version)
    return Published(cand.name, new_version, path, card)


def _check_compatible(model_dir: Path, cfg: cfgmod.ModelConfig) -> None:
    current = cfgmod.read_config(model_dir / "config.pbtxt")
    old, new = cfgmod.signature(current), cfgmod.signature(cfg)
    if old["inputs"] != new["inputs"] or old["outputs"] != new["outputs"] or (
        old["max_batch_size"] > 0) != (new["max_batch_size"] > 0):
        raise PublishError(
            "the new version's inputs/outputs differ from the model's config.pbtxt; "
            "publish it under a new model name",
            code="incompatible_signature", details={"config": old, "candidate": new},
        )


def _fill_version_dir(d: Path, cand: Candidate, card: ModelCard) -> None:
    _write(d / "model.onnx", cand.onnx_bytes)
    for rel, data in cand.extra_files.items():
        if "/" in rel or rel.startswith(".") or rel in ("model.onnx", "model_card.json"):
            raise PublishError(f"invalid extra file name '{rel}'", code="invalid_file")
        _write(d / rel, data)
    _write(d / "model_card.json", card.model_dump_json(indent=2).encode())
    _fsync_dir(d)


def _staging(parent: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))


def _stage_version(model_dir: Path, version: int, cand: Candidate, card: ModelCard) -> Path:
    # Non-numeric folders inside a model folder are ignored by Triton, so staging here is invisible.
    tmp = _staging(model_dir)
    try:
        _fill_version_dir(tmp, cand, card)
        target = model_dir / str(version)
        try:
            os.rename(tmp, target)  # fails if target exists and is non-empty: never overwrite
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise VersionExists(f"{cand.name} version {version} already exists",
                                    details={"model": cand.name, "version": version}) from exc
            raise
        _fsync_dir(model_dir)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _stage_new_model(repo: Path, cfg: cfgmod.ModelConfig, version: int, cand: Candidate, card: ModelCard) -> Path:
    # A whole new model folder appears with one rename. Staged beside the repository when it is on the same
    # filesystem (Triton never sees it), else inside it under a hidden name.
    parent = repo.parent if os.stat(repo.parent).st_dev == os.stat(repo).st_dev else repo
    tmp = _staging(parent)
    try:
        mdir = tmp / cand.name
        (mdir / str(version)).mkdir(parents=True)
        _write(mdir / "config.pbtxt", cfgmod.dumps(cfg).encode())
        gpu = cfgmod.ModelConfig()
        gpu.CopyFrom(cfg)
        for g in gpu.instance_group:
            g.kind = cfgmod.mc.ModelInstanceGroup.Kind.Value("KIND_GPU")
        (mdir / "configs").mkdir()
        _write(mdir / "configs" / "gpu.pbtxt", cfgmod.dumps(gpu).encode())
        if cand.labels:
            _write(mdir / "labels.txt", ("\n".join(cand.labels) + "\n").encode())
        _fill_version_dir(mdir / str(version), cand, card)
        _fsync_dir(mdir)
        target = repo / cand.name
        try:
            os.rename(mdir, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise VersionExists(f"model {cand.name} appeared while publishing", details={"model": cand.name}) from exc
            raise
        _fsync_dir(repo)
        return target / str(version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["NAME_RE", "Candidate", "Published", "SandboxLimits", "load_onnx", "publish", "smoke_run"]
