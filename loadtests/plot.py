"""Latency vs throughput from `mlstack bench` summaries: ``python -m loadtests.plot var/bench docs/benchmarks.png``.

One panel per scenario; each leg (triton, baseline, gateway, ...) is a line through its runs at increasing user counts.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def load(root: Path) -> list[dict]:
    """Every ``summary.json`` under ``root`` (one per bench run)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).rglob("summary.json"))]


def plot(summaries: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_scenario: dict[str, dict[str, list[tuple[int, float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for s in summaries:
        for leg, r in s["legs"].items():
            by_scenario[s["scenario"]][leg].append((s.get("users", 0), r["rps"], r["p50_ms"], r["p99_ms"]))
    names = sorted(by_scenario)
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, scenario in zip(axes.flat, names, strict=False):
        for leg, points in sorted(by_scenario[scenario].items()):
            points.sort()
            xs = [p[1] for p in points]
            line = ax.plot(xs, [p[3] for p in points], marker="o", label=f"{leg} p99")[0]
            ax.plot(xs, [p[2] for p in points], marker=".", linestyle="--", color=line.get_color(), alpha=0.6, label=f"{leg} p50")
            for users, rps, _p50, p99 in points:
                ax.annotate(f"c={users}", (rps, p99), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(f"mlstack bench {scenario}")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m loadtests.plot BENCH_DIR OUT.png")
    summaries = load(Path(sys.argv[1]))
    if not summaries:
        sys.exit(f"no summary.json under {sys.argv[1]}")
    sys.stdout.write(f"wrote {plot(summaries, Path(sys.argv[2]))}\n")


if __name__ == "__main__":
    main()
