"""Delimited and whitespace-separated text tables -> DataFrame (separator detected, strict about ragged rows)."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlstack.tables.limits import TableLimits, TableTooLarge, TableUnreadable

SEPARATORS = ("\t", ";", ",", "|")
SAMPLE_CHARS = 64 * 1024
MAX_REPORTED = 20  # ragged rows named in an error
WHITESPACE = "whitespace"
_COMMA_NUMBER = re.compile(r"(?:^|[\s;|])[+-]?\d+,\d+(?=$|[\s;|])", re.MULTILINE)
_DOT_NUMBER = re.compile(r"(?:^|[\s;|,])[+-]?\d*\.\d+(?:[eE][+-]?\d+)?(?=$|[\s;|,])", re.MULTILINE)
_NUMBER = re.compile(r"^\s*[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?\s*$")
csv.field_size_limit(64 * 1024 * 1024)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM; anything else is refused with where it went wrong."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise TableUnreadable(f"the file starts as UTF-16 but is not valid UTF-16 ({exc.reason})", "encoding") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TableUnreadable(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) is invalid; "
            "save it as UTF-8 (Excel: 'CSV UTF-8')", "encoding", offset=exc.start, line=line) from exc
    if "\x00" in text[:SAMPLE_CHARS]:
        raise TableUnreadable("the file holds binary data (NUL bytes), not a text table", "binary")
    return text


def detect_separator(text: str) -> str:
    """The separator whose field count in the sample's rows most often matches the header's (>= 2 fields)."""
    sample = text[:SAMPLE_CHARS]
    if len(text) > SAMPLE_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    best: tuple[float, int, str] | None = None
    for sep in SEPARATORS:
        try:
            counts = [len(r) for r in csv.reader(io.StringIO(sample), delimiter=sep) if r]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0], sep)
        if best is None or score[:2] > best[:2]:
            best = score
    if best is not None and best[0] >= 0.5:
        return best[2]
    lines = [ln.split() for ln in sample.splitlines() if ln.strip()]
    if lines and len(lines[0]) >= 2 and Counter(len(x) for x in lines).most_common(1)[0][0] == len(lines[0]):
        return WHITESPACE
    return best[2] if best is not None else ","


class RowIter:
    """Non-empty rows of ``text`` split by ``sep`` (or on whitespace), with ``line_num``."""

    def __init__(self, text: str, sep: str):
        self.whitespace = sep == WHITESPACE
        self.lines = iter(text.splitlines())
        self.reader = csv.reader(io.StringIO(text), delimiter=sep if not self.whitespace else ",")
        self.line_num = 0

    def __iter__(self) -> RowIter:
        return self

    def __next__(self) -> list[str]:
        while True:
            if self.whitespace:
                row = next(self.lines).split()
                self.line_num += 1
            else:
                row = next(self.reader)
                self.line_num = self.reader.line_num
            if len(row) > 1 or (row and row[0].strip()):  # blank lines are skipped, as pandas does
                return row


def column_names(header: list[str]) -> list[str]:
    """Header cells -> unique, non-empty names (blank -> column_N, repeats -> name_2, name_3...)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(header):
        name = str(cell).strip() if cell is not None else ""
        name = name or f"column_{i + 1}"
        base, n = name, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        out.append(name)
    return out


def is_header(cells: Sequence[object]) -> bool:
    """A first row made only of numbers is data, not a header."""
    return not all(c is not None and _NUMBER.match(str(c)) for c in cells)


def read_text(data: bytes, limits: TableLimits) -> pd.DataFrame:
    text = decode_text(data)
    if not text.strip():
        raise TableUnreadable("the file is empty: no columns", "no_columns")
    sep = detect_separator(text)
    rows = RowIter(text, sep)
    first = next(rows)
    width = len(first)
    if width > limits.max_columns:
        raise TableTooLarge("columns", limits.max_columns, width)
    header = is_header(first)
    count, n_bad = (0 if header else 1), 0
    bad: list[dict[str, Any]] = []
    for row in rows:
        count += 1
        if len(row) != width:
            n_bad += 1
            if len(bad) < MAX_REPORTED:
                bad.append({"line": rows.line_num, "fields": len(row)})
    if n_bad:
        listed = ", ".join(f"line {b['line']} has {b['fields']}" for b in bad[:5])
        raise TableUnreadable(f"{n_bad} row(s) do not have the header's {width} fields ({listed}{', ...' if n_bad > 5 else ''})",
                              "ragged_rows", expected_fields=width, rows=bad, count=n_bad,
                              separator=SEPARATOR_NAMES.get(sep, sep))
    if count > limits.max_rows:
        raise TableTooLarge("rows", limits.max_rows, count)
    if count == 0:
        raise TableUnreadable("the table has a header but no data rows", "no_rows")
    names = column_names(first) if header else [f"column_{i + 1}" for i in range(width)]
    try:
        frame = pd.read_csv(io.StringIO(text), sep=r"\s+" if sep == WHITESPACE else sep, header=0 if header else None,
                            names=names, low_memory=False, skip_blank_lines=True, decimal=_decimal(text, sep))
    except (ValueError, pd.errors.ParserError) as exc:
        raise TableUnreadable(f"the table could not be parsed: {str(exc)[:200]}", "parse") from exc
    frame.attrs["separator"] = SEPARATOR_NAMES.get(sep, sep)
    return frame


def _decimal(text: str, sep: str) -> str:
    """``,`` when the sample's numbers use decimal commas and none a decimal point (never with ``,`` as separator);
    the C parser then reads them (columns mixing both are converted afterwards, see types.tidy)."""
    if sep == ",":
        return "."
    sample = text[:SAMPLE_CHARS]
    return "," if _COMMA_NUMBER.search(sample) and not _DOT_NUMBER.search(sample) else "."


SEPARATOR_NAMES = {"\t": "tab", ";": ";", ",": ",", "|": "|", WHITESPACE: WHITESPACE}
