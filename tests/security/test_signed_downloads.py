"""Signed download links of stored inputs: tampered, expired, forged or path-climbing links get 403/404, never bytes
or a 500; the links are the gateway's own (file backend), checked on a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auth_api.stored_inputs import InputStore, store_of
from mlstack.storage import signing_key
from mlstack.storage.signing import signed_path
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


@pytest.fixture
def fgw(tmp_path: Path) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}")) as gw:
        yield gw


def _store(gw: RunningGateway) -> InputStore:
    store = store_of(gw.state)
    assert store is not None
    return store


def test_a_valid_link_serves_the_bytes_safely(fgw: RunningGateway) -> None:
    ref = _store(fgw).storage.put(PNG, "text/html", owner=1)  # the declared type is ignored: sniffed as PNG
    r = httpx.get(fgw.url + _store(fgw).url(ref.key))
    assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff" and "sandbox" in r.headers["content-security-policy"]


def test_one_changed_byte_of_the_signature_is_403(fgw: RunningGateway) -> None:
    ref = _store(fgw).storage.put(PNG, "image/png", owner=1)
    url = _store(fgw).url(ref.key)
    for i in (len(url) - 1, len(url) - 20, url.index("sig=") + 4):
        bad = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]
        r = httpx.get(fgw.url + bad)
        assert r.status_code == 403 and r.json()["error"]["code"] == "url_invalid", bad
    upper = url[:url.index("sig=") + 4] + url[url.index("sig=") + 4:].upper()
    assert httpx.get(fgw.url + upper).status_code == 403


def test_an_expired_or_stretched_link_is_403(fgw: RunningGateway) -> None:
    ref = _store(fgw).storage.put(PNG, "image/png", owner=1)
    expired = signed_path(signing_key(fgw.settings), ref.key, -5)
    assert httpx.get(fgw.url + expired).status_code == 403
    exp = int(expired.split("exp=")[1].split("&")[0])
    stretched = expired.replace(f"exp={exp}", f"exp={exp + 3600}")
    assert httpx.get(fgw.url + stretched).status_code == 403
    for q in ("", "?exp=&sig=", "?exp=abc&sig=00", "?exp=99999999999999999999&sig=00"):
        assert httpx.get(f"{fgw.url}/api/v1/files/{ref.key}{q}").status_code in (403, 422)


def test_a_signature_for_one_object_opens_no_other(fgw: RunningGateway) -> None:
    mine = _store(fgw).storage.put(PNG, "image/png", owner=1)
    theirs = _store(fgw).storage.put(PNG + b"x", "image/png", owner=2)
    url = _store(fgw).url(mine.key)
    assert httpx.get(fgw.url + url.replace(mine.key, theirs.key)).status_code == 403


def test_keys_that_climb_out_never_read_a_file(fgw: RunningGateway, tmp_path: Path) -> None:
    secret = signing_key(fgw.settings)
    (fgw.settings.var_dir / "objects" / "u1").mkdir(parents=True, exist_ok=True)
    for key in ("../jwt.key", "u1/../../jwt.key", "..%2Fjwt.key", "u1/%2e%2e/%2e%2e/jwt.key", "/etc/passwd"):
        r = httpx.get(fgw.url + signed_path(secret, key, 60))  # even correctly signed: not an object key
        assert r.status_code in (403, 404), (key, r.status_code)
        assert b"BEGIN" not in r.content and "Traceback" not in r.text


def test_a_signed_link_to_a_deleted_object_is_404(fgw: RunningGateway) -> None:
    ref = _store(fgw).storage.put(PNG, "image/png", owner=1)
    url = _store(fgw).url(ref.key)
    _store(fgw).storage.delete(ref.key)
    r = httpx.get(fgw.url + url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "object_not_found"
