"""Domain errors of the BentoML task service; each carries its HTTP status and becomes the shared JSON error body."""

from __future__ import annotations

from mlstack.errors import MlstackError, ModelNotFound

__all__ = ["BadRequest", "ImageTooLarge", "InvalidImage", "InvalidRecords", "ModelNotFound", "RunnerTimeout",
           "RunnerUnavailable", "UnsupportedModel"]


class BadRequest(MlstackError):
    """A request the service cannot read (wrong types, missing fields)."""

    code = "invalid_request"
    status = 400


class InvalidImage(MlstackError):
    """Not an image, a truncated file, or a decompression bomb."""

    code = "invalid_image"
    status = 400


class ImageTooLarge(MlstackError):
    code = "image_too_large"
    status = 413


class InvalidRecords(MlstackError):
    """Records whose features do not match the model card (unknown, missing, non-numeric)."""

    code = "invalid_records"
    status = 422


class UnsupportedModel(MlstackError):
    """The model exists but this task cannot use it (e.g. an image model for records)."""

    code = "unsupported_model"
    status = 422


class RunnerUnavailable(MlstackError):
    code = "runner_unavailable"
    status = 503


class RunnerTimeout(MlstackError):
    code = "runner_timeout"
    status = 504
