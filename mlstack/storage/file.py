"""The ``file`` backend: objects under ``var_dir/objects`` (0700), each written to a temp file and renamed into place (0600)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mlstack.private import private_dir
from mlstack.storage.base import KEY_RE, ObjectMissing, ObjectRef, StorageUnavailable
from mlstack.storage.signing import signed_path

logger = logging.getLogger(__name__)


class FileStorage:
    backend = "file"

    def __init__(self, root: Path, secret: bytes):
        self.root = root
        self.secret = secret
        private_dir(root)

    def _path(self, key: str) -> Path:
        if KEY_RE.fullmatch(key) is None:  # keys are ours; anything else never touches the filesystem
            raise ObjectMissing("no such object")
        return self.root / key

    def put(self, data: bytes, content_type: str | None, owner: int) -> ObjectRef:
        ref = ObjectRef.of(data, content_type, owner)
        self.write(ref, data)
        return ref

    def write(self, ref: ObjectRef, data: bytes) -> None:
        path = self._path(ref.key)
        if path.exists():  # content-addressed: the same key holds the same bytes
            return
        try:
            private_dir(path.parent)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        except OSError as exc:
            logger.error("could not store object %s: %s", ref.key, exc)
            raise StorageUnavailable("the object store refused the write") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing("no such object") from None
        except OSError as exc:
            raise StorageUnavailable("the object store cannot be read") from exc

    def exists(self, key: str) -> bool:
        return KEY_RE.fullmatch(key) is not None and self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, owner: int | None = None) -> Iterator[str]:
        dirs = [self.root / f"u{int(owner)}"] if owner is not None else sorted(self.root.glob("u*"))
        for d in dirs:
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    key = f"{d.name}/{p.name}"
                    if KEY_RE.fullmatch(key):
                        yield key

    def usage(self, owner: int) -> int:
        return sum(self._path(k).stat().st_size for k in self.keys(owner))

    def signed_url(self, key: str, expires_s: int) -> str:
        """A gateway-relative path (the gateway serves it at /api/v1/files/...)."""
        return signed_path(self.secret, key, expires_s)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable("the object folder is not writable")

    def close(self) -> None:
        pass
