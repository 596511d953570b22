"""Attack suite: ZIP bombs uploaded as datasets (an XLSX workbook or an image ZIP) are refused from the sizes their
members declare, fast and before anything is unpacked or stored."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.gateway import gateway_settings, run_gateway

MIB = 1024 * 1024


def _bomb(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


XLSX_BOMB = {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>",
             "xl/worksheets/sheet1.xml": b" " * (48 * MIB)}  # a worksheet of 48 MiB of blanks
IMAGE_BOMB = {"set/a/1.png": b"\0" * (24 * MIB), "set/b/1.png": b"\0" * (24 * MIB)}


@pytest.mark.parametrize(("filename", "members"), [("book.xlsx", XLSX_BOMB), ("pictures.zip", IMAGE_BOMB)])
def test_dataset_zip_bombs_are_413_without_unpacking(tmp_path: Path, filename: str, members: dict[str, bytes]) -> None:
    bomb = _bomb(members)
    assert len(bomb) < 200 * 1024  # ~100 KiB on the wire for 48 MiB unpacked
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", dataset_max_decompressed_bytes=32 * MIB)
    with run_gateway(settings) as gw, gw.client(gw.create_user("bomber")) as c:
        started = time.monotonic()
        r = c.post("/api/v1/datasets", files={"file": (filename, bomb)})
        assert time.monotonic() - started < 2.0
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "table_too_large" and err["details"]["what"] == "decompressed_bytes", err
        assert err["details"]["limit"] == 32 * MIB and err["details"]["actual"] >= 48 * MIB
        assert [d["id"] for d in c.get("/api/v1/datasets").json() if not d["id"].startswith("sample-")] == []
        stored = [p for p in (gw.settings.var_dir / "objects").rglob("*") if p.is_file()]
        assert stored == []
