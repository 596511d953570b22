"""Domain errors shared by every tier; each carries its code and HTTP status, mapped once per transport."""

from __future__ import annotations

from typing import Any


class MlstackError(Exception):
    """Base of every domain error: ``code`` is machine-readable, ``message`` is for people."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        """The JSON error body every API returns."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class PublishError(MlstackError):
    """A model version was refused; nothing was written."""

    code = "publish_refused"
    status = 422


class VersionExists(PublishError):
    code = "version_exists"
    status = 409


class ParityError(PublishError):
    """The ONNX export disagrees with the native model beyond tolerance."""

    code = "parity_failed"


class BelowThreshold(PublishError):
    """A trained model misses its headline-metric threshold; it is not published."""

    code = "below_threshold"


class ModelNotFound(MlstackError):
    code = "model_not_found"
    status = 404

    def __init__(self, name: str, version: int | str | None = None):
        what = f"model '{name}'" + (f" version {version}" if version is not None else "")
        super().__init__(f"{what} not found", details={"model": name, "version": version})
