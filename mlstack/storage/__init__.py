"""Object storage shared by every tier: ``open_storage(settings)`` gives the ``file`` or ``s3`` backend of ``Storage``."""

from __future__ import annotations

import contextlib
import os
import secrets
from urllib.parse import urlparse

from mlstack.private import private_dir, private_file
from mlstack.settings import Settings
from mlstack.storage.base import KEY_RE, ObjectMissing, ObjectRef, Storage, StorageUnavailable, content_type_of, sniff

__all__ = ["KEY_RE", "ObjectMissing", "ObjectRef", "Storage", "StorageUnavailable", "content_type_of", "open_storage",
           "signing_key", "sniff"]


def open_storage(settings: Settings) -> Storage:
    """The store ``settings.storage_url`` names (empty: files under ``var_dir/objects``)."""
    url = settings.storage_url.strip()
    if not url or url.startswith("file:"):
        from mlstack.storage.file import FileStorage

        root = urlparse(url).path if url.startswith("file:") and urlparse(url).path else settings.var_dir / "objects"
        return FileStorage(private_dir(root), signing_key(settings))
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError("MLSTACK_STORAGE_URL must be empty, file:///path or s3://bucket/prefix")
    from mlstack.storage.s3 import S3Storage

    secret = settings.storage_s3_secret_access_key
    return S3Storage(parsed.netloc, parsed.path, endpoint_url=settings.storage_s3_endpoint_url, region=settings.storage_s3_region,
                     access_key_id=settings.storage_s3_access_key_id,
                     secret_access_key=secret.get_secret_value() if secret is not None else None,
                     timeout_s=settings.storage_timeout_s)


def signing_key(settings: Settings) -> bytes:
    """MLSTACK_STORAGE_SIGNING_KEY, else ``var_dir/storage-signing.key`` (random, 0600, shared by every process)."""
    if settings.storage_signing_key is not None and settings.storage_signing_key.get_secret_value():
        return settings.storage_signing_key.get_secret_value().encode()
    path = private_dir(settings.var_dir) / "storage-signing.key"
    if not path.exists():
        tmp = path.with_name(f".storage-signing.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_urlsafe(48).encode())
            with contextlib.suppress(FileExistsError):  # another process won the race: everyone reads the winner's key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    private_file(path)
    return path.read_bytes().strip()
