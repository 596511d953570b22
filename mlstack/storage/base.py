"""The storage interface every tier uses for blobs (stored inputs, later datasets): content-addressed, owned, signed.

An object's key is ``u<owner>/<sha256>.<ext>``: derived from its bytes and its sniffed type only, never from a
client's file name, so the same bytes from the same owner are stored once and a key cannot climb out of the store.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from mlstack.errors import MlstackError

KEY_RE = re.compile(r"u(?P<owner>[0-9]{1,12})/(?P<sha>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,5})")
TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp",
         "json": "application/json", "txt": "text/plain; charset=utf-8", "bin": "application/octet-stream"}
EXTENSIONS = {v: k for k, v in TYPES.items()}


class StorageUnavailable(MlstackError):
    """The object store cannot be reached or refused the call."""

    code = "storage_unavailable"
    status = 503


class ObjectMissing(MlstackError):
    code = "object_not_found"
    status = 404


@dataclass(frozen=True)
class ObjectRef:
    key: str
    sha256: str
    size: int
    content_type: str
    owner: int

    @classmethod
    def of(cls, data: bytes, declared_type: str | None, owner: int) -> ObjectRef:
        """The reference ``data`` gets: its type is sniffed from the bytes (the declared one only breaks ties)."""
        ctype = sniff(data, declared_type)
        sha = hashlib.sha256(data).hexdigest()
        return cls(f"u{int(owner)}/{sha}.{EXTENSIONS[ctype]}", sha, len(data), ctype, int(owner))


def content_type_of(key: str) -> str:
    """The type an object was stored with (encoded in its key's extension)."""
    m = KEY_RE.fullmatch(key)
    if m is None:
        raise ValueError("not an object key")
    return TYPES.get(m["ext"], "application/octet-stream")


def sniff(data: bytes, declared: str | None = None) -> str:
    """The content type of ``data`` by its bytes; text and JSON only when they decode, anything else is octet-stream."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM" and len(data) > 26:
        return "image/bmp"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    if "\x00" in text:
        return "application/octet-stream"
    if (declared or "").split(";")[0].strip().lower() == "application/json" or text.lstrip()[:1] in ("{", "["):
        try:
            json.loads(text)
            return "application/json"
        except ValueError:
            pass
    return "text/plain; charset=utf-8"


class Storage(Protocol):
    """One blob store. Calls block (run them off the event loop); failures raise StorageUnavailable."""

    backend: str

    def put(self, data: bytes, content_type: str | None, owner: int) -> ObjectRef: ...

    def write(self, ref: ObjectRef, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, owner: int | None = None) -> Iterator[str]: ...

    def usage(self, owner: int) -> int: ...

    def signed_url(self, key: str, expires_s: int) -> str: ...

    def check(self) -> None: ...

    def close(self) -> None: ...
