"""Thermal images of a pack: decode a radiometric 16-bit PNG or a CSV grid of °C, then max / mean / ΔT and the hotspot
regions above a threshold (8-connected components, ``scipy.ndimage.label``).

Radiometric PNG scale: each 16-bit pixel is the temperature in **centi-kelvin** (``°C = value / 100 - 273.15``;
0..65535 covers -273.15..382.2 °C at 0.01 K), the convention of FLIR/Teledyne "radiometric TIFF/PNG" exports.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from auth_api.core.errors import InvalidInput

MAX_PIXELS = 4_000_000
MAX_HOTSPOTS = 50
DEFAULT_MARGIN_C = 5.0  # default threshold: the image's median + this
PLAUSIBLE_C = (-60.0, 400.0)


def decode(data: bytes, filename: str) -> tuple[np.ndarray, str]:
    """(temperatures °C [H, W] float64, kind) of a 16-bit PNG (centi-kelvin) or a CSV/TXT grid of °C."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data), "png16"
    if filename.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        raise InvalidInput("thermal images must be 16-bit PNGs (centi-kelvin) or CSV grids of °C", code="unsupported_image",
                           details={"field": "file"})
    return _grid(data), "csv"


def _png(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InvalidInput(f"image of {im.width}x{im.height} pixels; at most {MAX_PIXELS}", code="image_too_large",
                                   details={"limit": MAX_PIXELS})
            if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise InvalidInput(f"a {im.mode} PNG is not radiometric: send a 16-bit grayscale PNG (centi-kelvin)",
                                   code="not_radiometric", details={"field": "file", "mode": im.mode})
            raw = np.asarray(im, dtype=np.float64)
    except InvalidInput:
        raise
    except Exception as exc:  # truncated or corrupt files
        raise InvalidInput(f"unreadable PNG: {type(exc).__name__}", code="unreadable_image", details={"field": "file"}) from None
    return raw / 100.0 - 273.15


def _grid(data: bytes) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the grid is not UTF-8 text", code="unreadable_grid", details={"field": "file"}) from None
    rows = [ln for ln in text.replace(";", ",").replace("\t", ",").splitlines() if ln.strip()]
    if len(rows) * max((len(r.split(",")) for r in rows[:1]), default=0) > MAX_PIXELS:
        raise InvalidInput(f"grid larger than {MAX_PIXELS} cells", code="image_too_large", details={"limit": MAX_PIXELS})
    cells = [[c.strip() for c in (r.split(",") if "," in r else r.split())] for r in rows]
    if not cells or len({len(r) for r in cells}) != 1:
        bad = [i + 1 for i, r in enumerate(cells) if len(r) != len(cells[0])][:20]
        raise InvalidInput("the grid's rows differ in length", code="ragged_grid", details={"rows": bad})
    try:
        grid = np.asarray(cells, dtype=np.float64)
    except ValueError:
        row = next(i + 1 for i, r in enumerate(cells) if not all(_is_number(c) for c in r))
        raise InvalidInput(f"row {row} holds a value that is not a number", code="invalid_grid", details={"row": row}) from None
    return grid


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def analyse(temps: np.ndarray, threshold_c: float | None, min_area: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(stats, hotspots) of a temperature image."""
    if temps.size < 4 or temps.ndim != 2:
        raise InvalidInput("a thermal image needs at least 2x2 values", code="image_too_small")
    if not np.isfinite(temps).all() or temps.min() < PLAUSIBLE_C[0] or temps.max() > PLAUSIBLE_C[1]:
        raise InvalidInput(f"temperatures outside {PLAUSIBLE_C[0]:g}..{PLAUSIBLE_C[1]:g} °C (is the PNG in centi-kelvin?)",
                           code="implausible_temperatures",
                           details={"min_c": float(np.nanmin(temps)), "max_c": float(np.nanmax(temps))})
    median = float(np.median(temps))
    thr = threshold_c if threshold_c is not None else median + DEFAULT_MARGIN_C
    stats = {"max_c": float(temps.max()), "mean_c": float(temps.mean()), "min_c": float(temps.min()), "median_c": median,
             "delta_t_c": float(temps.max() - temps.min()), "threshold_c": thr, "width": int(temps.shape[1]),
             "height": int(temps.shape[0])}
    labels, _ = ndimage.label(temps > thr, structure=np.ones((3, 3), dtype=int))
    spots: list[dict[str, Any]] = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == k
        area = int(mask.sum())
        if area < min_area:
            continue
        vals = temps[sl][mask]
        ys, xs = np.nonzero(mask)
        spots.append({"bbox": {"x": int(sl[1].start), "y": int(sl[0].start), "width": int(sl[1].stop - sl[1].start),
                               "height": int(sl[0].stop - sl[0].start)},
                      "area_px": area, "max_c": float(vals.max()), "mean_c": float(vals.mean()),
                      "centroid": {"x": float(xs.mean() + sl[1].start), "y": float(ys.mean() + sl[0].start)}})
    spots.sort(key=lambda s: -float(s["max_c"]))
    stats["hotspots_total"] = len(spots)
    return stats, spots[:MAX_HOTSPOTS]
