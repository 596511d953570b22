"""The README's promises that can drift: the model table and the walkthrough's sample image."""

from __future__ import annotations

import os
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
    assert _readme_table() == out, "README's model table is stale: paste the output of `mlstack models --markdown`"


def test_walkthrough_digit_is_shipped_and_classified(bento: BentoFixture) -> None:
    shipped = (ROOT / "docs/examples/digit.png").read_bytes()
    data, label = digit_png(DEFAULT_INDEX)
    assert shipped == data, "docs/examples/digit.png differs from `python -m training.samples`"
    r = bento.post("classify_image", files={"image": ("digit.png", shipped, "image/png")}, data={"model": "digits-cnn"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == str(label) == "8"
