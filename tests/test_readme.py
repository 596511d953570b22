"""The README's promises that can drift: the model table and the walkthrough's sample image."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bento import BentoFixture
from training.samples import DEFAULT_INDEX, digit_png

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
pytestmark = pytest.mark.slow


def _readme_table() -> str:
    text = README.read_text()
    start = text.index("<!-- models-table:start")
    start = text.index("\n", start) + 1
    return text[start:text.index("<!-- models-table:end -->")].strip()


def test_models_table_is_what_mlstack_models_prints(trained_repo: Path) -> None:
    mlstack = Path(sys.executable).with_name("mlstack")
    out = subprocess.run([str(mlstack), "models", "--markdown"], capture_output=True, text=True, check=True,
                         env={**os.environ, "MLSTACK_REPOSITORY": str(trained_repo)}).stdout.strip()
    assert out.count("\n") == 11, out  # header, rule, ten models
    stale = "README's model table is stale: paste the output of `mlstack models --markdown`"
    readme, fresh = _rows(_readme_table()), _rows(out)
    assert [_masked(r) for r in readme] == [_masked(r) for r in fresh], stale
    for was, now in zip(readme, fresh, strict=True):
        assert abs(_metric(was) - _metric(now)) <= METRIC_TOLERANCE, f"{stale}\nREADME: {was}\nnow:    {now}"


# Training is seeded and byte-for-byte deterministic on one machine (tests/training/test_recipes.py), but float kernels
# differ between CPUs: digits-cnn measured 0.980 on one host and 0.982 on another (one of 450 held-out digits). The
# table must still say which models, versions, frameworks, thresholds and parity exist, exactly; the held-out figure
# may move by two misses at most.
METRIC_TOLERANCE = 0.005
_METRIC = re.compile(r"^(\w+) (-?[0-9.]+) (\(≥ [0-9.]+\))$")


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]


def _masked(row: list[str]) -> list[str]:
    m = _METRIC.match(row[5]) if len(row) > 5 else None
    return [*row[:5], f"{m[1]} · {m[3]}", *row[6:]] if m else row


def _metric(row: list[str]) -> float:
    m = _METRIC.match(row[5]) if len(row) > 5 else None
    return float(m[2]) if m else 0.0


def test_walkthrough_digit_is_shipped_and_classified(bento: BentoFixture) -> None:
    shipped = (ROOT / "docs/examples/digit.png").read_bytes()
    data, label = digit_png(DEFAULT_INDEX)
    assert shipped == data, "docs/examples/digit.png differs from `python -m training.samples`"
    r = bento.post("classify_image", files={"image": ("digit.png", shipped, "image/png")}, data={"model": "digits-cnn"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == str(label) == "8"
