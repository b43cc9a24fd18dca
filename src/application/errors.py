"""Application errors with stable machine codes; the HTTP edge maps each code to a status."""

from __future__ import annotations


class ApplicationError(Exception):
    code: str = "application_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(ApplicationError):
    code = "not_found"


class Unauthenticated(ApplicationError):
    code = "unauthenticated"


class Forbidden(ApplicationError):
    code = "forbidden"


class Conflict(ApplicationError):
    code = "conflict"


class InvalidInput(ApplicationError):
    code = "invalid_input"


class RateLimited(ApplicationError):
    """Refused by a limit; ``decision`` (a ``RateDecision``) says which, for the headers."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        decision: object = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        self.decision = decision


class ServiceUnavailable(ApplicationError):
    """A backing service (database, cache, provider) failed or is saturated; adapters raise
    this, never a driver error. ``retry_after_s``: when a retry may succeed, if known."""

    code = "service_unavailable"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ModelError(ApplicationError):
    """The chat model failed while a run was streaming."""

    code = "model_error"


class TenantScopeViolation(ApplicationError):
    """Code asked a tenant's transaction for another tenant's rows: a defect, never a client
    error. The database refuses it too (row-level security)."""

    code = "tenant_scope_violation"


class ContentSchemaError(ApplicationError):
    """A content source answered in a shape we do not understand (its schema drifted); the
    message names the field."""

    code = "content_schema_changed"


class TemplateFailed(ApplicationError):
    """A template is invalid, or tried to reach what the sandbox does not allow."""

    code = "template_failed"
