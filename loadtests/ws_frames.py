"""64x64 PNG digits (sklearn's 8x8 digits, upscaled) for the WebSocket benchmark, example client and tests."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=4)
def digit_pngs(side: int = 64, count: int = 50) -> tuple[tuple[int, bytes], ...]:
    """(true digit, PNG bytes) pairs: light ink on a dark background, as the digits models were trained on."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for img, label in zip(d.images[:count], d.target[:count], strict=True):
        pixels = (np.asarray(img) * (255.0 / 16.0)).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").resize((side, side), Image.Resampling.NEAREST).save(buf, format="PNG")
        out.append((int(label), buf.getvalue()))
    return tuple(out)
