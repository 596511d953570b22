"""Telemetry intake: map a table's columns (aliases, unit hints) to samples, validate each row, report what was refused.

A table comes from ``mlstack.tables.read_table`` (CSV/TXT/XLSX, the parser dataset uploads use) or from a JSON batch;
both end here as a DataFrame. Rows are numbered from 1 (the first data row, header excluded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auth_api.core.errors import InvalidInput
from mlstack.errors import MlstackError

MAX_ROWS = 200_000  # samples per upload (a day at ~2 Hz); larger -> 413 naming the limit
MAX_REPORTED = 100  # rejected rows listed in a report (the total is always given)
TEMP_RANGE_C = (-40.0, 120.0)
AMBIENT_RANGE_C = (-40.0, 80.0)
MAX_ABS_CURRENT_A = 10_000.0
MAX_EPOCH_S = 7_258_118_400.0  # 2200-01-01: larger numbers are milliseconds or nonsense

# normalised header -> column. Headers are lower-cased, a unit in brackets is split off, other punctuation -> "_".
ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("time", "t", "ts", "timestamp", "datetime", "date_time", "date", "time_s", "seconds", "epoch", "time_utc"),
    "voltage": ("voltage", "v", "voltage_v", "volt", "volts", "u", "cell_voltage", "pack_voltage", "voltage_mv", "mv"),
    "current": ("current", "i", "current_a", "amps", "amp", "a", "i_a", "current_ma", "ma"),
    "temperature": ("temperature", "temp", "temp_c", "temperature_c", "t_c", "cell_temp", "cell_temperature", "celsius",
                    "temperature_k", "temp_k"),
    "soc": ("soc", "state_of_charge", "soc_pct", "soc_percent"),
    "ambient": ("ambient", "ambient_c", "t_amb", "t_ambient", "ambient_temperature", "ambient_temp"),
}
REQUIRED = ("time", "voltage", "current", "temperature")
_LOOKUP = {alias: col for col, names in ALIASES.items() for alias in names}
_UNIT = re.compile(r"^(?P<name>.*?)\s*[\(\[](?P<unit>[^\)\]]*)[\)\]]\s*$")


class TooManyRows(MlstackError):
    code = "too_many_rows"
    status = 413

    def __init__(self, rows: int, limit: int = MAX_ROWS):
        super().__init__(f"{rows} rows in one upload; the limit is {limit} (split the file)",
                         details={"limit": limit, "rows": rows})


@dataclass
class Parsed:
    """Valid samples (arrays sorted by time) and the refused rows."""

    ts: np.ndarray
    voltage: np.ndarray
    current: np.ndarray
    temperature: np.ndarray
    soc: np.ndarray | None
    ambient: np.ndarray | None
    received: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0
    columns: dict[str, str] = field(default_factory=dict)  # column -> the header it came from

    def report(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": len(self.ts), "rejected_total": self.rejected_total,
                "rejected": self.rejected, "columns": self.columns}


def _normalise(header: str) -> tuple[str, str]:
    """(name, unit) of a header: ``Voltage (mV)`` -> (``voltage``, ``mv``), ``temp_c`` -> (``temp_c``, ``c``)."""
    text = str(header).strip().lower().replace("°", "")
    unit = ""
    if (m := _UNIT.match(text)) is not None:
        text, unit = m["name"], m["unit"].strip()
    name = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    if name in ("mv", "ma"):
        unit = name
    elif not unit and "_" in name:
        unit = name.rsplit("_", 1)[1]
    if unit in ("%", "percent", "pct"):
        unit = "pct"
    return name, unit


def map_columns(headers: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(column -> header, column -> unit) for the recognised headers; 422 naming what is missing or ambiguous."""
    found: dict[str, str] = {}
    units: dict[str, str] = {}
    for h in headers:
        name, unit = _normalise(h)
        col = _LOOKUP.get(name)
        if col is None:
            continue
        if col in found:
            raise InvalidInput(f"columns {found[col]!r} and {h!r} both map to '{col}'; keep one", code="ambiguous_columns",
                               details={"column": col, "headers": [found[col], str(h)]})
        found[col], units[col] = str(h), unit
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise InvalidInput(f"missing column(s): {', '.join(missing)}", code="missing_columns",
                           details={"missing": missing, "headers": [str(h) for h in headers][:50],
                                    "aliases": {c: list(ALIASES[c]) for c in missing}})
    return found, units


def _times(raw: pd.Series, start: float | None) -> np.ndarray:
    """Epoch seconds (NaN where unparseable): numbers are epoch seconds (or seconds after ``start``), text is ISO-8601."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):  # the table reader already parsed ISO times
        dt = raw if getattr(raw.dt, "tz", None) is not None else raw.dt.tz_localize("UTC")
        return (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    num = pd.to_numeric(raw, errors="coerce")
    if num.notna().sum() >= max(1, raw.notna().sum() // 2):  # a numeric column (a few junk cells stay NaN)
        out = num.to_numpy(dtype=np.float64)
        return out + start if start is not None else out
    dt = pd.to_datetime(raw.astype("string"), errors="coerce", utc=True, format="ISO8601")
    return (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)  # NaT -> NaN


def _scaled(raw: pd.Series, column: str, unit: str) -> np.ndarray:
    x = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    if unit in ("mv", "ma"):
        return x / 1000.0
    if column in ("temperature", "ambient") and unit == "k":
        return x - 273.15
    if column == "soc" and unit == "pct":
        return x / 100.0
    return x


def parse_frame(df: pd.DataFrame, *, start: float | None = None) -> Parsed:
    """Validate a table of samples; every refused row is named with its reason (first ``MAX_REPORTED``)."""
    n = len(df)
    if n > MAX_ROWS:
        raise TooManyRows(n)
    if n == 0:
        raise InvalidInput("the upload holds no samples", code="no_samples")
    cols, units = map_columns([str(c) for c in df.columns])
    headers = {c: df.columns[[str(h) for h in df.columns].index(h)] for c, h in cols.items()}
    ts = _times(df[headers["time"]], start)
    vals = {c: _scaled(df[headers[c]], c, units[c]) for c in cols if c != "time"}
    reasons = np.full(n, "", dtype=object)

    def refuse(mask: np.ndarray, why: str) -> None:
        reasons[mask & (reasons == "")] = why

    refuse(~np.isfinite(ts), "unparseable time")
    refuse((ts < 0) | (ts > MAX_EPOCH_S), "time out of range (epoch seconds 1970..2200, or ISO-8601)")
    for c in ("voltage", "current", "temperature"):
        refuse(~np.isfinite(vals[c]), f"{c} is not a number")
    refuse(vals["voltage"] <= 0, "voltage must be > 0 V")
    refuse(np.abs(vals["current"]) > MAX_ABS_CURRENT_A, f"current beyond ±{MAX_ABS_CURRENT_A:g} A")
    lo, hi = TEMP_RANGE_C
    refuse((vals["temperature"] < lo) | (vals["temperature"] > hi), f"temperature outside {lo:g}..{hi:g} °C")
    if "soc" in vals:
        s = vals["soc"]
        refuse(np.isfinite(s) & ((s < 0) | (s > 1)), "soc outside 0..1 (or 0..100 with a % header)")
    if "ambient" in vals:
        a = vals["ambient"]
        refuse(np.isfinite(a) & ((a < AMBIENT_RANGE_C[0]) | (a > AMBIENT_RANGE_C[1])),
               f"ambient outside {AMBIENT_RANGE_C[0]:g}..{AMBIENT_RANGE_C[1]:g} °C")
    ok = reasons == ""
    # duplicated timestamps inside the upload: the first one wins, later ones are named
    first = pd.Series(np.where(ok, ts, np.nan)).duplicated(keep="first").to_numpy() & ok
    if first.any():
        owner: dict[float, int] = {}
        for i in np.flatnonzero(ok):
            owner.setdefault(ts[i], i)
        for i in np.flatnonzero(first):
            reasons[i] = f"duplicated time (same as row {owner[ts[i]] + 1})"
        ok = reasons == ""
    bad = np.flatnonzero(~ok)
    rejected = [{"row": int(i) + 1, "reason": str(reasons[i])} for i in bad[:MAX_REPORTED]]
    order = np.argsort(ts[ok], kind="stable")

    def pick(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else x[ok][order]

    soc, amb = vals.get("soc"), vals.get("ambient")
    return Parsed(ts=ts[ok][order], voltage=vals["voltage"][ok][order], current=vals["current"][ok][order],
                  temperature=vals["temperature"][ok][order], soc=pick(soc), ambient=pick(amb), received=n,
                  rejected=rejected, rejected_total=len(bad), columns=cols)


def parse_samples(samples: list[dict[str, Any]], *, start: float | None = None) -> Parsed:
    """A JSON batch (``{"time", "voltage", "current", "temperature", "soc"?, "ambient"?}`` per sample, aliases allowed)."""
    if len(samples) > MAX_ROWS:
        raise TooManyRows(len(samples))
    return parse_frame(pd.DataFrame.from_records(samples), start=start)


def require_usable(p: Parsed) -> None:
    """422 when not one row survived (the report says why for each)."""
    if len(p.ts) == 0:
        raise InvalidInput("no usable samples: every row was refused", code="no_usable_samples", details=p.report())
