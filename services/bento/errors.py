"""Domain errors of the BentoML task service; each carries its HTTP status and becomes the shared JSON error body."""

from __future__ import annotations

from mlstack.errors import MlstackError, ModelNotFound

# The image errors belong to the shared preprocessing (the gateway's WebSocket frames raise them too).
from mlstack.imaging import ImageTooLarge, InvalidImage, UnsupportedModel

__all__ = ["BadRequest", "ImageTooLarge", "InvalidImage", "InvalidRecords", "ModelNotFound", "RunnerTimeout",
           "RunnerUnavailable", "UnsupportedModel"]


class BadRequest(MlstackError):
    """A request the service cannot read (wrong types, missing fields)."""

    code = "invalid_request"
    status = 400


class InvalidRecords(MlstackError):
    """Records whose features do not match the model card (unknown, missing, non-numeric)."""

    code = "invalid_records"
    status = 422


class RunnerUnavailable(MlstackError):
    code = "runner_unavailable"
    status = 503


class RunnerTimeout(MlstackError):
    code = "runner_timeout"
    status = 504
