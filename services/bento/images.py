"""Image bytes -> the model's input tensor: the shared preprocessing of ``mlstack.imaging`` (one copy for every tier)."""

from __future__ import annotations

from mlstack.imaging import FORMATS, REDUCED_SIDE, decode, image_spec, normalise, to_tensor

__all__ = ["FORMATS", "REDUCED_SIDE", "decode", "image_spec", "normalise", "to_tensor"]
