"""A parsed dataset -> its profile: column types, missing counts, candidate targets with why, class balance, preview."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlstack.tables import ImageSet

PREVIEW_ROWS = 10
MAX_CLASSES = 20  # a column with at most this many distinct values may be a classification target
MAX_CATEGORIES = 50  # text columns with at most this many distinct values (and repeats) are categorical
MAX_BALANCE = 50  # values listed in a class balance
MAX_TARGETS = 20
MAX_TEXT = 200  # characters of a text cell in the preview


def jsonable(v: Any) -> Any:
    """One cell as JSON: NaN/NaT/None -> null, numpy scalars -> Python, dates -> ISO 8601, long text cut."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, (datetime, date, pd.Timestamp)):
        return v.isoformat()
    if isinstance(v, (bool, int)):
        return v
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    s = str(v)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "…"


def dtype_of(col: pd.Series, distinct: int) -> str:
    if pd.api.types.is_bool_dtype(col):
        return "bool"
    if pd.api.types.is_integer_dtype(col):
        return "int"
    if pd.api.types.is_float_dtype(col):
        values = col.dropna()
        return "int" if len(values) and bool((values == values.round()).all()) and values.abs().max() < 2**53 else "float"
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime"
    non_null = int(col.notna().sum())
    if distinct <= MAX_CATEGORIES and distinct < max(2, non_null // 2 + 1):
        return "categorical"
    return "text"


def table_profile(frame: pd.DataFrame) -> dict[str, Any]:
    rows = len(frame)
    columns, targets, balance = [], [], {}
    for name in frame.columns:
        col = frame[name]
        distinct = int(col.nunique(dropna=True))
        dtype = dtype_of(col, distinct)
        columns.append({"name": str(name), "dtype": dtype, "missing": int(col.isna().sum()), "distinct": distinct})
        why = _target_why(dtype, distinct, rows)
        if why is not None:
            targets.append({"column": str(name), "task": why[0], "why": why[1]})
            if why[0] == "classification":
                counts = col.value_counts(dropna=True).head(MAX_BALANCE)
                balance[str(name)] = {str(jsonable(k)): int(n) for k, n in counts.items()}
    targets.reverse()  # the last column is the usual place of the target: it comes first
    head = frame.head(PREVIEW_ROWS)
    preview = [{str(k): jsonable(v) for k, v in zip(head.columns, row, strict=True)} for row in head.itertuples(index=False)]
    return {"columns": columns, "targets": targets[:MAX_TARGETS], "balance": balance, "preview": preview,
            "separator": frame.attrs.get("separator"), "sheet": frame.attrs.get("sheet"), "sheets": frame.attrs.get("sheets")}


def _target_why(dtype: str, distinct: int, rows: int) -> tuple[str, str] | None:
    if distinct < 2:
        return None  # one value (or none): nothing to learn
    if dtype in ("bool", "categorical") or (dtype == "int" and distinct <= MAX_CLASSES):
        return "classification", f"{distinct} distinct values"
    if dtype in ("int", "float"):
        return "regression", f"numeric with {distinct} distinct values"
    return None


def image_profile(images: ImageSet) -> dict[str, Any]:
    balance = images.balance()
    preview = [{"name": n, "class": images.classes[int(lab)], "height": int(a.shape[0]), "width": int(a.shape[1])}
               for n, lab, a in zip(images.names[:PREVIEW_ROWS], images.labels[:PREVIEW_ROWS], images.images[:PREVIEW_ROWS],
                                    strict=True)]
    return {"columns": [], "classes": list(images.classes), "balance": {"class": balance},
            "targets": [{"column": "class", "task": "classification", "why": f"one folder per class ({len(balance)} classes)"}],
            "preview": preview}


def profile_of(data: pd.DataFrame | ImageSet) -> dict[str, Any]:
    return image_profile(data) if isinstance(data, ImageSet) else table_profile(data)
