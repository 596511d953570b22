"""The storage interface on both backends (files under var/objects, S3 over real HTTP to moto_server): same tests."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mlstack.settings import Settings
from mlstack.storage import ObjectMissing, Storage, StorageUnavailable, open_storage
from tests.fixtures.s3 import MotoServer, start_moto

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(100))


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    extra = request.getfixturevalue("moto").settings() if request.param == "s3" else {}
    s = open_storage(Settings(var_dir=tmp_path / "var", **extra))
    assert s.backend == request.param
    yield s
    s.close()


def test_put_is_content_addressed_owned_and_deduplicated(store: Storage) -> None:
    a = store.put(PNG, "image/png", owner=7)
    again = store.put(PNG, "image/png", owner=7)
    assert again == a and a.key.startswith("u7/") and a.sha256 in a.key and a.size == len(PNG)
    assert list(store.keys(7)) == [a.key]  # stored once
    assert store.get(a.key) == PNG and store.exists(a.key)
    other = store.put(PNG, "image/png", owner=8)  # another owner's copy is theirs (deleting one never breaks the other)
    assert other.key != a.key and store.usage(7) == store.usage(8) == len(PNG)
    store.delete(a.key)
    assert not store.exists(a.key) and store.get(other.key) == PNG
    with pytest.raises(ObjectMissing):
        store.get(a.key)


def test_the_stored_type_is_sniffed_from_the_bytes(store: Storage) -> None:
    assert store.put(JPEG, "image/png", owner=1).content_type == "image/jpeg"  # declared PNG, bytes say JPEG
    assert store.put(b"<script>alert(1)</script>", "text/html", owner=1).content_type == "text/plain; charset=utf-8"
    assert store.put(b'{"a": 1}', "application/json", owner=1).content_type == "application/json"
    assert store.put(b"\x00\x01\xfe\xff", "image/png", owner=1).content_type == "application/octet-stream"


def test_keys_that_are_not_ours_never_reach_the_store(store: Storage, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("x")
    for key in ("../secret.txt", "u1/../../secret.txt", "/etc/passwd", "u1/" + "a" * 64 + ".png/../x"):
        assert not store.exists(key)
        with pytest.raises(ObjectMissing):
            store.get(key)


def test_a_signed_url_downloads_the_bytes_with_their_type(store: Storage) -> None:
    ref = store.put(JPEG, "application/octet-stream", owner=3)
    url = store.signed_url(ref.key, 60)
    if store.backend == "file":
        assert url.startswith("/api/v1/files/" + ref.key + "?exp=")  # served by the gateway (tests/auth_api)
        return
    # moto checks neither expiry nor signature (AWS, MinIO and Ceph do): check the URL asks for exactly our lifetime.
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"], url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == JPEG and r.headers["content-type"] == "image/jpeg"


def test_file_objects_are_private_and_written_whole(tmp_path: Path) -> None:
    s = open_storage(Settings(var_dir=tmp_path / "var"))
    ref = s.put(PNG, "image/png", owner=1)
    path = tmp_path / "var" / "objects" / ref.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var" / "objects").stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_dead_s3_store_fails_fast_with_a_domain_error(tmp_path: Path) -> None:
    with start_moto() as server:
        s = open_storage(Settings(var_dir=tmp_path / "var", **MotoServer.settings(server)))
        s.check()
    start = time.monotonic()
    with pytest.raises(StorageUnavailable):
        s.put(PNG, "image/png", owner=1)
    with pytest.raises(StorageUnavailable):
        s.check()
    assert time.monotonic() - start < 10
