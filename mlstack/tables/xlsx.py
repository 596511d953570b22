"""XLSX sheets -> DataFrame with openpyxl in read-only mode (the ZIP's declared size is capped before opening)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pandas as pd

from mlstack.tables.limits import TableLimits, TableTooLarge, TableUnreadable
from mlstack.tables.text import MAX_REPORTED, column_names, is_header


def declared_size(data: bytes) -> int:
    """Sum of the ZIP members' declared uncompressed sizes (zipfile stops reading a member at its declared size)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise TableUnreadable(f"not a valid XLSX file (broken ZIP container: {exc})", "format") from exc


def read_xlsx(data: bytes, sheet: str | None, limits: TableLimits) -> pd.DataFrame:
    size = declared_size(data)
    if size > limits.max_decompressed_bytes:
        raise TableTooLarge("decompressed_bytes", limits.max_decompressed_bytes, size)
    import openpyxl  # imported when a spreadsheet arrives, not with the module
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise TableUnreadable(f"not a valid XLSX workbook: {str(exc)[:200]}", "format") from exc
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise TableUnreadable(f"the workbook has no sheet '{sheet}'; its sheets: {', '.join(wb.sheetnames)}",
                                  "unknown_sheet", sheet=sheet, sheets=list(wb.sheetnames))
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        frame = _frame(ws.iter_rows(values_only=True), limits)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:  # members lying about their size fail their CRC
        raise TableUnreadable(f"the workbook could not be read: {str(exc)[:200]}", "format") from exc
    finally:
        wb.close()
    frame.attrs["sheet"] = ws.title
    frame.attrs["sheets"] = list(wb.sheetnames)
    return frame


def _frame(rows: Any, limits: TableLimits) -> pd.DataFrame:
    header: list[Any] | None = None
    width = 0
    body: list[tuple[Any, ...]] = []
    bad: list[dict[str, int]] = []
    n_bad = 0
    for number, row in enumerate(rows, start=1):
        if row is None or all(c is None or (isinstance(c, str) and not c.strip()) for c in row):
            continue
        if header is None:
            cells = list(row)
            while cells and cells[-1] is None:
                cells.pop()
            width = len(cells)
            if width > limits.max_columns:
                raise TableTooLarge("columns", limits.max_columns, width)
            header = cells
            if not is_header(cells):
                body.append(tuple(cells))
            continue
        if any(c is not None for c in row[width:]):
            n_bad += 1
            if len(bad) < MAX_REPORTED:
                bad.append({"line": number, "fields": max(i + 1 for i, c in enumerate(row) if c is not None)})
            continue
        if len(body) >= limits.max_rows:
            raise TableTooLarge("rows", limits.max_rows, f"more than {limits.max_rows}")
        body.append(tuple(row[:width]) + (None,) * (width - len(row)))
    if header is None:
        raise TableUnreadable("the sheet is empty: no columns", "no_columns")
    if n_bad:
        raise TableUnreadable(f"{n_bad} row(s) have cells beyond the header's {width} columns (row {bad[0]['line']}, ...)",
                              "ragged_rows", expected_fields=width, rows=bad, count=n_bad)
    if not body:
        raise TableUnreadable("the sheet has a header but no data rows", "no_rows")
    names = column_names(header) if is_header(header) else [f"column_{i + 1}" for i in range(width)]
    return pd.DataFrame.from_records(body, columns=names)
