"""Limits and errors of the shared table/image-set reader (``mlstack.tables``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlstack.errors import MlstackError

MiB = 1024 * 1024


@dataclass(frozen=True)
class TableLimits:
    """What one upload may hold; beyond any of these the reader refuses with ``TableTooLarge`` (413)."""

    max_bytes: int = 50 * MiB
    max_rows: int = 1_000_000
    max_columns: int = 500
    max_decompressed_bytes: int = 200 * MiB  # XLSX and image ZIPs: declared and actually read, summed
    max_images: int = 20_000
    max_image_bytes: int = 10 * MiB  # one image inside a ZIP
    max_image_pixels: int = 40_000_000
    max_decode_pixels: int = 16_000_000
    image_side: int = 64  # images are kept as grayscale thumbnails of at most this side


class TableTooLarge(MlstackError):
    """The upload exceeds a limit; ``details``: ``what`` (bytes/rows/columns/...), ``limit``, ``actual``."""

    code = "table_too_large"
    status = 413

    def __init__(self, what: str, limit: int, actual: int | str, message: str | None = None):
        super().__init__(message or f"the upload has {actual} {what}; the limit is {limit}",
                         details={"what": what, "limit": limit, "actual": actual})


class TableUnreadable(MlstackError):
    """The upload cannot be read as a table/image set; ``details.reason`` says why (machine-readable)."""

    code = "table_unreadable"
    status = 422

    def __init__(self, message: str, reason: str, **details: Any):
        super().__init__(message, details={"reason": reason, **details})


DEFAULT_LIMITS = TableLimits()
