"""Image bytes -> the model's input tensor, as the model card's ``preprocessing.image`` describes it.

The one copy of the image preprocessing: BentoML's ``classify_image`` and the gateway's WebSocket frames both use it.

Decoding refuses what is not an image, truncated files and decompression bombs; polarity is normalised
(dark ink on light paper is inverted to the light-on-dark the digits models were trained on).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mlstack.errors import MlstackError
from mlstack.repository.card import ModelCard


class InvalidImage(MlstackError):
    """Not an image, a truncated file, or a decompression bomb."""

    code = "invalid_image"
    status = 400


class ImageTooLarge(MlstackError):
    code = "image_too_large"
    status = 413


class UnsupportedModel(MlstackError):
    """The model exists but this task cannot use it (e.g. an image model for records)."""

    code = "unsupported_model"
    status = 422


FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# Share of the border's pixels used to guess the background level (and so the polarity).
BORDER = 0.1
# Fewest grey levels between background and the brightest ink for an image to hold a drawing at all.
MIN_CONTRAST = 16.0
# Long side images are reduced to before normalising (the models take 8x8..28x28; more only costs CPU).
REDUCED_SIDE = 512
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def decode(data: bytes, *, max_bytes: int, max_pixels: int, max_decode_pixels: int | None = None) -> Image.Image:
    """Bytes -> an 8-bit grayscale image at most ~REDUCED_SIDE on its long side; InvalidImage / ImageTooLarge otherwise.

    Decode cost is bounded before decoding: JPEGs are decoded at a reduced DCT scale (cost follows the reduced size),
    other formats must be decoded in full, so beyond ``max_decode_pixels`` (read from the header) they are refused.
    """
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes",
                            details={"bytes": len(data), "limit": max_bytes})
    if not data:
        raise InvalidImage("the image field is empty", code="empty_image")
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse there too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=FORMATS)
            _bound_decode(opened, max_decode_pixels)
            opened.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image has too many pixels (decompression bomb?); the limit is {max_pixels} pixels",
                           code="decompression_bomb", details={"limit_pixels": max_pixels, "reason": str(exc)[:300]}) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"not an image (accepted formats: {', '.join(FORMATS)})", code="not_an_image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow: "image file is truncated", "broken data stream", bad PNG chunks (SyntaxError)...
        raise InvalidImage(f"image could not be decoded (truncated or corrupt): {str(exc)[:200]}",
                           code="corrupt_image", details={"reason": str(exc)[:300]}) from exc
    orientation = opened.getexif().get(ORIENTATION_TAG)
    img = _shrink(opened)
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    return img.convert("L")


def _bound_decode(opened: Image.Image, max_decode_pixels: int | None) -> None:
    w, h = opened.size
    if opened.format == "JPEG":
        opened.draft("L", (REDUCED_SIDE, REDUCED_SIDE))
        return
    if max_decode_pixels is not None and w * h > max_decode_pixels:
        raise ImageTooLarge(
            f"{opened.format} image is {w}x{h} = {w * h} pixels; images other than JPEG are decoded in full and "
            f"the limit is {max_decode_pixels} pixels (the model uses far fewer): downscale it or send a JPEG",
            details={"width": w, "height": h, "pixels": w * h, "limit_pixels": max_decode_pixels})


def _shrink(img: Image.Image) -> Image.Image:
    """Box-reduce so the long side is about REDUCED_SIDE: every later step then costs the same for any upload."""
    factor = max(img.size) // REDUCED_SIDE
    if factor < 2:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if img.mode in ("PA", "P") and ("transparency" in img.info or img.mode == "PA") else "L")
    return img.reduce(factor)


def _border_level(a: np.ndarray) -> float:
    h, w = a.shape
    bh, bw = max(1, int(h * BORDER)), max(1, int(w * BORDER))
    border = np.concatenate([a[:bh].ravel(), a[-bh:].ravel(), a[:, :bw].ravel(), a[:, -bw:].ravel()])
    return float(np.median(border))


def normalise(img: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """Grayscale image -> float32 [height, width] in [0, 1], light ink on dark background."""
    a = np.asarray(img, dtype=np.float32)
    bg = _border_level(a)
    if spec.get("polarity", "light_on_dark") == "light_on_dark" and bg > 127.5:
        a, bg = 255.0 - a, 255.0 - bg
    # Contrast: background -> 0, brightest ink -> 1 (photos have grey paper and grey ink).
    hi = float(a.max())
    if hi - bg < MIN_CONTRAST:
        raise InvalidImage("the image is blank (no ink stands out from the background)", code="blank_image")
    a = np.clip((a - bg) / (hi - bg), 0.0, 1.0)
    # Pad to a square around the centre so the aspect ratio survives the resize.
    h, w = a.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = a
    height, width = int(spec.get("height", 8)), int(spec.get("width", 8))
    small = Image.fromarray(square, mode="F").resize((width, height), Image.Resampling.BOX)
    return np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)


def to_tensor(pixels: np.ndarray, card: ModelCard) -> np.ndarray:
    """[H, W] -> one sample in the model's input layout (card ``inputs[0].shape`` without the batch axis)."""
    shape = [d for d in card.inputs[0].shape[1:]] if card.inputs else []
    if not shape or any(d <= 0 for d in shape) or int(np.prod(shape)) != pixels.size:
        raise UnsupportedModel(f"model '{card.name}' does not take {pixels.shape[0]}x{pixels.shape[1]} images",
                               details={"model": card.name, "input_shape": card.inputs[0].shape if card.inputs else None})
    return pixels.reshape(shape).astype(np.float32)


def image_spec(card: ModelCard) -> dict[str, Any]:
    spec = card.preprocessing.get("image") if card.preprocessing else None
    if not isinstance(spec, dict):
        raise UnsupportedModel(f"model '{card.name}' is not an image model (its card has no preprocessing.image)",
                               details={"model": card.name})
    return spec
