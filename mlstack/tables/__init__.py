"""The one reader of uploaded tables and image sets: dataset uploads, training jobs and battery telemetry all use it.

``read_table(data, filename, sheet=..., limits=...)`` -> pandas DataFrame from CSV (``,`` ``;`` tab, detected; UTF-8
with or without BOM; decimal comma when the separator is not ``,``), TXT (delimited or whitespace-separated) or XLSX
(openpyxl read-only; first sheet or ``sheet``). ``read_image_zip(data, limits)`` -> ImageSet (one folder per class).
Over a limit: ``TableTooLarge`` (413); unreadable: ``TableUnreadable`` (422, ``details.reason`` says why).
The frame's ``attrs`` carry ``format`` and, as they apply, ``separator``, ``sheet``, ``sheets``.
"""

from __future__ import annotations

import pandas as pd

from mlstack.tables.images import ImageSet, read_image_zip
from mlstack.tables.limits import DEFAULT_LIMITS, TableLimits, TableTooLarge, TableUnreadable
from mlstack.tables.text import read_text
from mlstack.tables.types import tidy
from mlstack.tables.xlsx import read_xlsx

__all__ = ["DEFAULT_LIMITS", "FORMATS", "ImageSet", "TableLimits", "TableTooLarge", "TableUnreadable", "read_dataset",
           "read_image_zip", "read_table", "sniff_format"]

FORMATS = ("csv", "txt", "xlsx", "zip")
_BY_EXTENSION = {"csv": "csv", "tsv": "csv", "txt": "txt", "tab": "txt", "dat": "txt", "xlsx": "xlsx", "xlsm": "xlsx",
                 "zip": "zip"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def sniff_format(data: bytes, filename: str) -> str:
    """``csv`` | ``txt`` | ``xlsx`` | ``zip``: binary content decides (a ZIP with ``xl/`` is a workbook), else the extension."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if data.startswith(_OLE_MAGIC) or ext == "xls":
        raise TableUnreadable("legacy Excel (.xls) files are not supported: save the sheet as XLSX or CSV", "format")
    if data.startswith(_ZIP_MAGIC):
        head = data[-65536:] if len(data) > 65536 else data  # the central directory (member names) sits at the end
        if b"xl/workbook.xml" in head or (b"[Content_Types].xml" in head and b"xl/" in head):
            return "xlsx"
        return "zip"
    if ext in ("xlsx", "xlsm", "zip"):
        raise TableUnreadable(f"the file is named .{ext} but is not a ZIP container", "format")
    return _BY_EXTENSION.get(ext, "csv")


def read_table(data: bytes, filename: str, *, sheet: str | None = None, limits: TableLimits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Bytes of a CSV/TXT/XLSX upload -> DataFrame (first row the header unless it is all numbers)."""
    if len(data) > limits.max_bytes:
        raise TableTooLarge("bytes", limits.max_bytes, len(data))
    fmt = sniff_format(data, filename)
    if fmt == "zip":
        raise TableUnreadable("the file is a ZIP archive, not a table (image datasets are ZIPs of class folders)", "format")
    if sheet is not None and fmt != "xlsx":
        raise TableUnreadable(f"'sheet' applies to XLSX workbooks; this file is {fmt.upper()}", "sheet_not_applicable")
    frame = read_xlsx(data, sheet, limits) if fmt == "xlsx" else read_text(data, limits)
    attrs = dict(frame.attrs)
    frame = tidy(frame, decimal_comma=attrs.get("separator", ",") != ",")
    frame.attrs.update(attrs, format=fmt)
    return frame


def read_dataset(data: bytes, fmt: str, *, filename: str = "", sheet: str | None = None,
                 limits: TableLimits = DEFAULT_LIMITS) -> pd.DataFrame | ImageSet:
    """A stored upload of format ``fmt`` (csv/txt/xlsx -> DataFrame, zip -> ImageSet)."""
    if fmt == "zip":
        return read_image_zip(data, limits)
    return read_table(data, filename or f"upload.{fmt}", sheet=sheet, limits=limits)
