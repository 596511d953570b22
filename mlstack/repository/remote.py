"""A model repository on S3: the bucket is the source of truth, each host keeps a local mirror for cards and labels.

``MLSTACK_REPOSITORY=s3://bucket/prefix`` makes ``settings.repository`` a mirror folder under var_dir; ``attach``
marks it, and every change the repository code makes there (publish, promote, rollback, delete) is pushed to the
bucket while the repository lock is held. Triton serves the bucket directly (``triton_url``), so the push order is
what keeps a polling Triton from loading half a version:

1. a model that gains a version while its config selects ``latest`` first gets a config pinned to the versions the
   bucket serves now (one PUT), so the new version's folder is invisible to Triton's version policy while it fills;
2. each new version's files go up with ``model.onnx`` last (a version without it cannot load);
3. the model's other files, then ``config.pbtxt`` — the PUT that makes the change visible (written twice, a second
   apart: S3 times are whole seconds and Triton reloads only on a later one);
4. objects of removed versions are deleted last (a deleted model: versions first, then its config).

A push that fails leaves the model marked dirty in the mirror; ``sync`` pushes dirty models before it pulls, and a
pull never overwrites a dirty model. Two hosts publishing to the same model at the same moment can pick the same
version number: publish through one registry (a gateway, a job runner) per model — see docs/scaling.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)

MARKER = ".mlstack-remote.json"
DIRTY = ".mlstack-dirty"
MODEL_FILE = "model.onnx"
CONFIG = "config.pbtxt"


class RepositorySyncFailed(MlstackError):
    code = "repository_sync_failed"
    status = 503


@dataclass(frozen=True)
class Remote:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Remote | None:
        url = getattr(settings, "repository_remote", "")
        if not url:
            return None
        bucket, _, prefix = url.removeprefix("s3://").strip("/").partition("/")
        secret = settings.repository_s3_secret_access_key
        return cls(bucket, prefix.strip("/"), settings.repository_s3_endpoint_url, settings.repository_s3_region,
                   settings.repository_s3_access_key_id, secret.get_secret_value() if secret else None)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                                          retries={"max_attempts": 2}))

    def triton_url(self) -> str:
        """The --model-repository Triton understands: s3://host:port/bucket/prefix for a custom endpoint."""
        path = f"{self.bucket}/{self.prefix}".rstrip("/")
        if self.endpoint_url:
            host = self.endpoint_url.split("://", 1)[-1].rstrip("/")
            return f"s3://{host}/{path}"
        return f"s3://{path}"

    def triton_env(self) -> dict[str, str]:
        env = {"AWS_DEFAULT_REGION": self.region}
        if self.access_key_id and self.secret_access_key:
            env |= {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        return env


# Credentials stay in the process that was given them (settings); the marker on disk holds none.
_CREDENTIALS: dict[str, Remote] = {}


def attach(mirror: Path, remote: Remote) -> None:
    """Mark ``mirror`` as the mirror of ``remote`` (idempotent) and remember its credentials in this process."""
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / MARKER).write_text(json.dumps({"bucket": remote.bucket, "prefix": remote.prefix,
                                             "endpoint_url": remote.endpoint_url, "region": remote.region}))
    _CREDENTIALS[str(mirror.resolve())] = remote


def remote_of(repo: Path) -> Remote | None:
    """The remote ``repo`` mirrors, or None for a plain local repository."""
    known = _CREDENTIALS.get(str(Path(repo).resolve()))
    if known is not None:
        return known
    marker = Path(repo) / MARKER
    if not marker.is_file():
        return None
    doc = json.loads(marker.read_text())
    return Remote(doc["bucket"], doc["prefix"], doc.get("endpoint_url"), doc.get("region", "us-east-1"))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _local_files(model_dir: Path) -> dict[str, Path]:
    out = {}
    for p in model_dir.rglob("*"):
        rel = p.relative_to(model_dir)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p
    return out


def _remote_files(client: Any, remote: Remote, name: str) -> dict[str, str]:
    base = remote.key(f"{name}/")
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=remote.bucket, Prefix=base):
        for obj in page.get("Contents", ()):
            out[obj["Key"][len(base):]] = str(obj["ETag"]).strip('"')
    return out


def _version_of(rel: str) -> int | None:
    head = rel.split("/", 1)[0]
    return int(head) if "/" in rel and head.isdigit() else None


def _pinned_config(remote_versions: set[int], client: Any, remote: Remote, name: str) -> bytes | None:
    """The bucket's config pinned to what it serves now, when it selects ``latest`` (else None: nothing to pin)."""
    from mlstack.repository import config as cfgmod

    try:
        body = client.get_object(Bucket=remote.bucket, Key=remote.key(f"{name}/{CONFIG}"))["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    cfg = cfgmod.loads(body.decode())
    if cfg.version_policy.WhichOneof("policy_choice") not in (None, "latest"):
        return None
    n = cfg.version_policy.latest.num_versions or 1
    live = sorted(remote_versions)[-n:]
    if not live:
        return None
    cfg.version_policy.Clear()
    cfg.version_policy.specific.versions.extend(live)
    return cfgmod.dumps(cfg).encode()


def push(repo: Path, name: str) -> None:
    """Make the bucket's copy of model ``name`` equal the mirror's, in the order that keeps Triton consistent."""
    remote = remote_of(repo)
    if remote is None:
        return
    dirty = Path(repo) / DIRTY / name
    dirty.parent.mkdir(parents=True, exist_ok=True)
    dirty.touch()
    try:
        _push(remote, Path(repo), name)
    except Exception as exc:
        raise RepositorySyncFailed(f"the change to {name} is in the local mirror but not yet in {remote.bucket}: {exc}; "
                                   "it is pushed again on the next sync", details={"model": name, "bucket": remote.bucket}) from exc
    dirty.unlink(missing_ok=True)


def _push(remote: Remote, repo: Path, name: str) -> None:
    client = remote.client()
    model_dir = repo / name
    local = _local_files(model_dir) if model_dir.is_dir() else {}
    there = _remote_files(client, remote, name)
    changed = {rel: p for rel, p in local.items() if there.get(rel) != _md5(p)}
    gone = [rel for rel in there if rel not in local]

    def put(rel: str, data: bytes | None = None) -> None:
        body = data if data is not None else local[rel].read_bytes()
        client.put_object(Bucket=remote.bucket, Key=remote.key(f"{name}/{rel}"), Body=body)

    remote_versions = {v for rel in there if (v := _version_of(rel)) is not None}
    new_versions = {v for rel in changed if (v := _version_of(rel)) is not None} - remote_versions
    if new_versions and CONFIG in local and (pinned := _pinned_config(remote_versions, client, remote, name)):
        put(CONFIG, pinned)
    version_files = sorted((rel for rel in changed if _version_of(rel) is not None),
                           key=lambda rel: (_version_of(rel), rel.endswith("/" + MODEL_FILE), rel))
    for rel in version_files:
        put(rel)
    for rel in sorted(rel for rel in changed if _version_of(rel) is None and rel != CONFIG):
        put(rel)
    if CONFIG in changed or (new_versions and CONFIG in local):
        put(CONFIG)
        # S3's LastModified has whole seconds and Triton reloads only on a *later* time than it saw: a poll in the same
        # second as this PUT (before it) would never notice it. Writing it once more in the next second closes that.
        time.sleep(1.05 - (time.time() % 1.0))
        put(CONFIG)
    # Removals last: a removed version's files, then (a deleted model) its config.
    for rel in sorted(gone, key=lambda rel: rel == CONFIG):
        client.delete_object(Bucket=remote.bucket, Key=remote.key(f"{name}/{rel}"))
    logger.info("pushed %s to s3://%s/%s: %d objects up, %d removed", name, remote.bucket, remote.prefix,
                len(changed), len(gone))


def pull(repo: Path) -> list[str]:
    """Bring the mirror up to the bucket (models that are not dirty); returns the models that changed."""
    remote = remote_of(repo)
    if remote is None:
        return []
    repo = Path(repo)
    client = remote.client()
    base = remote.key("")
    names: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=remote.bucket, Prefix=base, Delimiter="/"):
        names |= {p["Prefix"][len(base):].strip("/") for p in page.get("CommonPrefixes", ())}
    dirty = {p.name for p in (repo / DIRTY).iterdir()} if (repo / DIRTY).is_dir() else set()
    local_names = {p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")} if repo.is_dir() else set()
    changed = []
    for name in sorted((names | local_names) - dirty):
        if _pull_model(client, remote, repo, name):
            changed.append(name)
    return changed


def _pull_model(client: Any, remote: Remote, repo: Path, name: str) -> bool:
    import shutil

    there = _remote_files(client, remote, name)
    model_dir = repo / name
    if not there:
        if model_dir.is_dir():
            shutil.rmtree(model_dir)
            return True
        return False
    local = _local_files(model_dir) if model_dir.is_dir() else {}
    fetch = sorted((rel for rel, etag in there.items() if rel not in local or _md5(local[rel]) != etag),
                   key=lambda rel: rel == CONFIG)  # config last: the catalog sees a whole version or none
    for rel in fetch:
        dest = model_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(client.get_object(Bucket=remote.bucket, Key=remote.key(f"{name}/{rel}"))["Body"].read())
        os.replace(tmp, dest)
    stale = [rel for rel in local if rel not in there]
    for rel in stale:
        (model_dir / rel).unlink(missing_ok=True)
    for d in sorted((p for p in model_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return bool(fetch or stale)


def sync(repo: Path) -> list[str]:
    """Push the models whose last push failed, then pull the rest."""
    if remote_of(repo) is None:
        return []
    dirty_dir = Path(repo) / DIRTY
    for p in sorted(dirty_dir.iterdir()) if dirty_dir.is_dir() else ():
        try:
            push(repo, p.name)
        except RepositorySyncFailed as exc:
            logger.warning("%s", exc.message)
    return pull(repo)


def open_repository(settings: Any) -> Path:
    """The folder the repository code works in: ``settings.repository``, attached to and synced with its bucket
    first when the repository is on S3."""
    repo = Path(settings.repository)
    rem = Remote.from_settings(settings)
    if rem is not None:
        attach(repo, rem)
        try:
            sync(repo)
        except Exception as exc:
            raise RepositorySyncFailed(f"cannot read the repository bucket {rem.bucket}: {exc}",
                                       details={"bucket": rem.bucket, "endpoint": rem.endpoint_url}) from exc
    return repo
