"""Column types after parsing: decimal-comma numbers and ISO dates held as text become numbers and datetimes."""

from __future__ import annotations

import pandas as pd

_DECIMAL_COMMA = r"^\s*[+-]?\d*,\d+(?:[eE][+-]?\d+)?\s*$|^\s*[+-]?\d+\s*$"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
SAMPLE = 1000


def tidy(frame: pd.DataFrame, *, decimal_comma: bool) -> pd.DataFrame:
    """Convert text columns that are wholly decimal-comma numbers (when allowed) or ISO dates; others stay as they are."""
    for name in frame.columns:
        col = frame[name]
        if not (col.dtype == object or isinstance(col.dtype, pd.StringDtype)):  # pandas 3 reads text as "str"
            continue
        values = col.dropna()
        if values.empty:
            continue
        if not all(isinstance(v, str) for v in values.head(SAMPLE)):
            frame[name] = col.infer_objects()  # spreadsheet cells: numbers, dates, booleans beside empty cells
            continue
        head = values.head(SAMPLE).astype(str)  # a sample decides whether the whole column is worth a look
        comma = decimal_comma and bool(head.str.match(_DECIMAL_COMMA).all())
        if not comma and not head.str.strip().str.match(_ISO_DATE).all():
            continue
        text = values.astype(str)
        if comma and text.str.contains(",", regex=False).any() and text.str.match(_DECIMAL_COMMA).all():
            frame[name] = pd.to_numeric(col.str.replace(",", ".", regex=False).str.strip())
        elif text.str.strip().str.match(_ISO_DATE).all():
            aware = bool(text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$").any())
            converted = pd.to_datetime(col.str.strip(), format="ISO8601", errors="coerce", utc=aware)
            if converted.notna().sum() == len(values):
                frame[name] = converted
    return frame
