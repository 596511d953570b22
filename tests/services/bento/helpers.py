"""Helpers for the task-service tests: digit images rendered the way a user would upload them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def render_digit(pixels: np.ndarray, *, scale: int = 8, invert: bool = False, fmt: str = "PNG") -> bytes:
    """An 8x8 digit in [0, 1] upscaled ``scale`` times to an 8-bit image (dark ink on light paper if ``invert``)."""
    a = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    if invert:
        a = 255 - a
    img = Image.fromarray(a, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    if fmt == "JPEG":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
