"""The README's model table, rendered from the rows of ``mlstack models --json`` (a test keeps the README in step)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HEADER = ("| model | version | task | framework | algorithm | held-out metric (threshold) | parity |\n"
          "|---|---|---|---|---|---|---|")


def _metric(r: Mapping[str, Any]) -> str:
    if not r.get("metric"):
        return "-"
    threshold = "" if r.get("threshold") is None else f" (≥ {r['threshold']:g})"
    return f"{r['metric']} {r['value']:.3f}{threshold}"


def _parity(r: Mapping[str, Any]) -> str:
    if r.get("parity") is None:
        return "-"
    if not r["parity"]:
        return "failed"
    tol = r.get("parity_tolerance")
    return "passed" if tol is None else f"passed (tolerance {tol:g})"


def markdown_models(rows: Iterable[Mapping[str, Any]]) -> str:
    """One Markdown table row per model version, in the order given."""
    lines = [HEADER]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['version']} | {r.get('task') or '-'} | {r.get('framework') or '-'} "
                     f"| {r.get('algorithm') or '-'} | {_metric(r)} | {_parity(r)} |")
    return "\n".join(lines)
