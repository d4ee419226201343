"""The engine's error hierarchy. It knows nothing of HTTP: each edge maps it in one table."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every error an edge may turn into a client-visible reply."""

    code = "engine_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.counted = False
        """Set by the facade once it has counted this error as a failed prediction
        (``inference_requests``, ``inference_errors``): an edge counts only the others."""


class Unauthorized(EngineError):
    """The caller's token is missing or wrong."""

    code = "unauthorized"


class Forbidden(EngineError):
    """The operation is disabled or not allowed for this caller."""

    code = "forbidden"


class InvalidInput(EngineError):
    """The request is well-formed JSON but not a valid request."""

    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    """Too many texts, a text too long, or a body over the size limit."""

    code = "payload_too_large"


class ModelNotFound(EngineError):
    """No such model in the registry."""

    code = "model_not_found"


class VersionNotFound(ModelNotFound):
    """The model exists but has no such servable version."""

    code = "version_not_found"


class ModelNotReady(EngineError):
    """The version exists but is not loaded: still loading, or it failed to load."""

    code = "model_not_ready"


class Overloaded(EngineError):
    """Too much work is already queued; the caller should retry later.

    ``retry_after_s`` is when a retry is likely to be admitted (from the measured drain rate);
    the HTTP edge sends it as ``Retry-After``."""

    code = "overloaded"

    def __init__(self, message: str, *, details: Any = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Overloaded):
    """The request's time (REQUEST_TIMEOUT_MS) ran out before its work could run."""

    code = "deadline_exceeded"


class InferenceFailed(EngineError):
    """The runtime failed while computing a batch."""

    code = "inference_failed"


class ReloadFailed(EngineError):
    """A registry reload was refused; the previous registry keeps serving."""

    code = "reload_failed"


class BackendUnavailable(EngineError):
    """A service the engine depends on (e.g. the token store) cannot be reached or read."""

    code = "backend_unavailable"
