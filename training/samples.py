"""Sample inputs for trying the stack: a digit image rendered from the bundled scikit-learn digits data.

The image models (`digits-cnn`, `digits-keras`) were trained on scikit-learn's 8×8 digits (not MNIST); an upload is
downsampled to 8×8, so a digit drawn as 8×8 blocks upscaled to any size is what they read best.
``python -m training.samples digit.png`` writes the image the README's walkthrough uploads (also shipped as
``docs/examples/digit.png``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

DEFAULT_INDEX = 1797 - 3  # a held-out "8" (the recipes test on the last quarter of the data)


def digit_png(index: int = DEFAULT_INDEX, scale: int = 8) -> tuple[bytes, int]:
    """(PNG bytes of digit ``index`` upscaled ``scale`` times, light ink on dark, its true label)."""
    digits = load_digits()
    if not 0 <= index < len(digits.images):
        raise ValueError(f"index must be in 0..{len(digits.images) - 1}")
    pixels = np.clip(np.round(digits.images[index] / 16.0 * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), int(digits.target[index])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the PNG")
    parser.add_argument("--index", type=int, default=DEFAULT_INDEX, help="row of load_digits() to render")
    parser.add_argument("--scale", type=int, default=8, help="upscaling factor (8 → 64×64 pixels)")
    args = parser.parse_args(argv)
    data, label = digit_png(args.index, args.scale)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({8 * args.scale}×{8 * args.scale} px), true label {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
