"""The exception hierarchy. Each error carries the HTTP status and CLI exit code it maps to.

Messages are written for the person who hit them: what went wrong and, where possible, what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ExitCode:
    OK = 0
    FAILURE = 1  # unexpected failure
    USAGE = 2  # bad arguments, bad settings, bad input
    NOT_FOUND = 3
    CONFLICT = 4
    INTEGRITY = 5  # corrupt data detected
    UNAVAILABLE = 6  # overloaded, no memory, daemon unreachable


class LlmosError(Exception):
    """Base class: ``code`` is a stable machine-readable name, ``message`` is for people."""

    http_status = 500
    exit_code = ExitCode.FAILURE
    code = "internal_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        return {"message": self.message, "type": self.code, **self.details}


class ConfigError(LlmosError):
    http_status = 500
    exit_code = ExitCode.USAGE
    code = "config_error"


class InvalidInput(LlmosError):
    http_status = 400
    exit_code = ExitCode.USAGE
    code = "invalid_request_error"


class InvalidName(InvalidInput):
    code = "invalid_name"


class UnsafeFormat(InvalidInput):
    code = "unsafe_format"


class ImportFailed(InvalidInput):
    code = "import_failed"


class PayloadTooLarge(InvalidInput):
    http_status = 413
    code = "payload_too_large"


class WrongTask(InvalidInput):
    code = "wrong_task"


class Unauthorized(LlmosError):
    """No usable API key: missing, malformed, unknown or revoked."""

    http_status = 401
    exit_code = ExitCode.USAGE
    code = "invalid_api_key"


class Forbidden(LlmosError):
    """A valid key whose scopes do not cover the route."""

    http_status = 403
    exit_code = ExitCode.USAGE
    code = "insufficient_scope"


class PublicModel(Forbidden):
    """A tenant tried to add or re-point a version of a public model; only an admin may."""

    code = "public_model"


class NotFound(LlmosError):
    http_status = 404
    exit_code = ExitCode.NOT_FOUND
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    @classmethod
    def for_name(cls, name: str, known: Iterable[str]) -> "ModelNotFound":
        known = sorted(set(known))
        stem = name.split(":")[0].lower()
        close = [k for k in known if stem and stem in k.lower()][:3]
        close += [k for k in difflib.get_close_matches(name, known, n=3, cutoff=0.5) if k not in close]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        have = f" Known models: {', '.join(known)}." if known else " The store holds no models."
        return cls(f"model {name!r} not found.{hint}{have}", suggestions=close, available=known)


class Conflict(LlmosError):
    http_status = 409
    exit_code = ExitCode.CONFLICT
    code = "conflict"


class IntegrityError(LlmosError):
    http_status = 500
    exit_code = ExitCode.INTEGRITY
    code = "integrity_error"


class StoreFull(LlmosError):
    http_status = 507
    exit_code = ExitCode.UNAVAILABLE
    code = "storage_full"


class Unavailable(LlmosError):
    http_status = 503
    exit_code = ExitCode.UNAVAILABLE
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, **details: object) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class RateLimited(Unavailable):
    """A key's request rate or daily token quota is used up; Retry-After says when to come back."""

    http_status = 429
    code = "rate_limit_exceeded"


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"


class QueueFull(Unavailable):
    code = "queue_full"


class WontFit(Unavailable):
    """A model cannot be loaded within the memory budget, even with everything idle evicted."""

    http_status = 507
    code = "insufficient_memory"


class EngineFailed(LlmosError):
    http_status = 500
    code = "engine_error"


class EngineLost(Unavailable):
    """The machine (a cluster node) running a model's engine went away; the model is placed again."""

    code = "engine_lost"
