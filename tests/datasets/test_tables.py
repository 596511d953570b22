"""The shared table reader: CSV/TXT/XLSX detection and types, image ZIPs, and every refusal (limits, bombs, traversal)."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import openpyxl
import pytest
from PIL import Image

from mlstack.tables import TableLimits, TableTooLarge, TableUnreadable, read_image_zip, read_table, sniff_format


def _png(value: int, size: int = 16) -> bytes:
    a = np.zeros((size, size), np.uint8)
    a[4:12, 4:12] = value
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_csv_semicolon_bom_decimal_comma_and_iso_dates() -> None:
    data = "\ufeffwhen;temp;cell;ok\n2024-01-02;1,5;A;true\n2024-01-03;-2,25;B;false\n2024-01-04;3;A;true\n".encode()
    f = read_table(data, "t.csv")
    assert list(f.columns) == ["when", "temp", "cell", "ok"]  # the BOM is not part of the first name
    assert f["temp"].tolist() == [1.5, -2.25, 3.0] and f["temp"].dtype == np.float64
    assert str(f["when"].dtype).startswith("datetime64") and f["ok"].dtype == bool
    assert f.attrs["separator"] == ";" and f.attrs["format"] == "csv"


def test_tab_and_whitespace_text_and_headerless() -> None:
    tab = read_table(b"a\tb\tc\n1.5\t2\tx y\n2\t3\tz\n", "t.tsv")
    assert tab.attrs["separator"] == "tab" and tab["c"].tolist() == ["x y", "z"] and tab["a"].tolist() == [1.5, 2.0]
    mixed = read_table(b"a\tb\n1,5\t2.5\n2\t3.25\n", "m.tsv")  # decimal comma in one column, point in another
    assert mixed["a"].tolist() == [1.5, 2.0] and mixed["b"].tolist() == [2.5, 3.25]
    ws = read_table(b"time   volts  amps\n0.0  3.71   1.2\n\n1.0  3.70   1.3\n", "log.txt")
    assert ws.attrs["separator"] == "whitespace" and ws.attrs["format"] == "txt" and ws.shape == (2, 3)
    bare = read_table(b"1 2 3\n4 5 6\n", "raw.txt")  # a first row of numbers is data
    assert list(bare.columns) == ["column_1", "column_2", "column_3"] and len(bare) == 2
    dupes = read_table(b"a,a,\n1,2,3\n", "d.csv")
    assert list(dupes.columns) == ["a", "a_2", "column_3"]
    quoted = read_table(b'name,note\n"x, y","two\nlines"\n', "q.csv")
    assert quoted.iloc[0].tolist() == ["x, y", "two\nlines"]


def test_refusals_say_why() -> None:
    with pytest.raises(TableUnreadable) as ragged:
        read_table(b"a,b\n1,2\n1,2,3\n4\n5,6\n", "r.csv")
    d = ragged.value.details
    assert ragged.value.status == 422 and d["reason"] == "ragged_rows" and d["expected_fields"] == 2
    assert [r["line"] for r in d["rows"]] == [3, 4] and "line 3 has 3" in ragged.value.message
    with pytest.raises(TableUnreadable) as enc:
        read_table(b"a,b\n1,caf\xe9\n", "latin1.csv")
    assert enc.value.details["reason"] == "encoding" and enc.value.details["line"] == 2
    for empty in (b"", b"\n \n"):
        with pytest.raises(TableUnreadable) as e:
            read_table(empty, "e.csv")
        assert e.value.details["reason"] == "no_columns"
    with pytest.raises(TableUnreadable) as legacy:
        read_table(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "old.xls")
    assert legacy.value.details["reason"] == "format"
    limits = TableLimits(max_bytes=100, max_rows=3, max_columns=2)
    for data, what in ((b"a,b\n" + b"1,2\n" * 30, "bytes"), (b"a,b\n" + b"1,2\n" * 4, "rows"), (b"a,b,c\n1,2,3\n", "columns")):
        with pytest.raises(TableTooLarge) as big:
            read_table(data, "x.csv", limits=limits)
        assert big.value.status == 413 and big.value.details["what"] == what and big.value.details["limit"] in (100, 3, 2)


def test_xlsx_first_sheet_named_sheet_and_unknown_sheet() -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "readings"
    ws.append(["cell", "volts", "label"])
    ws.append(["A", 3.7, "ok"])
    ws.append(["B", None, "fault"])
    wb.create_sheet("meta").append(["k"])
    wb["meta"].append([1])
    buf = io.BytesIO()
    wb.save(buf)
    data = buf.getvalue()
    f = read_table(data, "book.xlsx")
    assert f.attrs["sheet"] == "readings" and f.shape == (2, 3) and np.isnan(f["volts"][1])
    assert read_table(data, "no-extension", sheet="meta")["k"].tolist() == [1]  # sniffed from the bytes
    with pytest.raises(TableUnreadable) as e:
        read_table(data, "book.xlsx", sheet="nope")
    assert e.value.details["reason"] == "unknown_sheet" and e.value.details["sheets"] == ["readings", "meta"]
    assert sniff_format(data, "book.csv") == "xlsx" and sniff_format(_zip({"a/1.png": _png(200)}), "x") == "zip"


def test_image_zip_classes_and_arrays() -> None:
    data = _zip({"set/cat/1.png": _png(200), "set/cat/2.png": _png(250), "set/dog/1.png": _png(180),
                 "__MACOSX/set/._x": b"junk", "set/.DS_Store": b"junk"})
    s = read_image_zip(data)
    assert s.classes == ["cat", "dog"] and s.balance() == {"cat": 2, "dog": 1} and len(s) == 3
    arr = s.to_array(8, 8)
    assert arr.shape == (3, 8, 8) and arr.dtype == np.float32 and arr.min() >= 0.0 and arr.max() <= 1.0


def test_image_zip_refusals_without_unpacking() -> None:
    # 2 x 16 MiB of zeros deflate to ~32 KB: refused from the declared sizes before a byte is decompressed.
    bomb = _zip({"a/1.png": b"\0" * (16 * 1024 * 1024), "a/2.png": b"\0" * (16 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(TableTooLarge) as e:
        read_image_zip(bomb, TableLimits(max_decompressed_bytes=24 * 1024 * 1024))
    assert e.value.details["what"] == "decompressed_bytes" and e.value.details["actual"] == 32 * 1024 * 1024
    assert len(bomb) < 100 * 1024
    # A member that lies about its size: the running count of what is actually read stops it.
    liar = bytearray(_zip({"a/x.png": b"\0" * (4 * 1024 * 1024)}, zipfile.ZIP_DEFLATED))
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = liar.find(sig)
        liar[pos + size_at:pos + size_at + 4] = struct.pack("<I", 100)
    with pytest.raises(TableUnreadable) as lie:  # zipfile stops at the declared size; the CRC then fails
        read_image_zip(bytes(liar), TableLimits(max_decompressed_bytes=1024 * 1024))
    assert lie.value.details["reason"] == "format" and "CRC" in lie.value.message
    for members, reason in (({"../evil/x.png": _png(9)}, "unsafe_path"), ({"/abs/x.png": _png(9)}, "unsafe_path"),
                            ({"cat/notes.txt": b"not an image"}, "not_an_image"), ({"x.png": _png(9)}, "layout")):
        with pytest.raises(TableUnreadable) as bad:
            read_image_zip(_zip(members))
        assert bad.value.details["reason"] == reason, members
