"""One table from error codes to HTTP statuses; every error leaves as RFC 9457
``application/problem+json``. A 500 is a bug: it is logged with its request id."""

from __future__ import annotations

import logging
import math

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from application.errors import ApplicationError, RateLimited, ServiceUnavailable
from application.quota.ports import RateDecision
from domain.errors import DomainError

log = logging.getLogger("sba.http")

PROBLEM_JSON = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "invalid_cursor": 400,
    "invalid_json": 400,
    "json_too_deep": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "invalid_run_transition": 409,
    "thread_busy": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_input": 422,
    "invariant_violated": 422,
    "validation_failed": 422,
    "rate_limited": 429,
    "budget_exhausted": 429,
    "internal_error": 500,
    "model_error": 502,
    "service_unavailable": 503,
    "server_busy": 503,
    "redis_busy": 503,
}

# The app's count of 503 answers by code (a plain dict in ``app.state``, read by /metrics).
REFUSALS_STATE = "sba_refusals"

_CODE_BY_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    401: "unauthenticated",
    403: "forbidden",
    409: "conflict",
    429: "rate_limited",
    503: "service_unavailable",
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None


_encode = msgspec.json.Encoder().encode


def problem(
    code: str,
    detail: str,
    *,
    status: int | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    status = status or STATUS_BY_CODE.get(code, 500)
    body = Problem(
        type=f"urn:sba:problem:{code.replace('_', '-')}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        instance=instance,
    )
    return Response(
        content=_encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """draft-ietf-httpapi-ratelimit-headers: every policy in ``RateLimit-Policy``, the binding
    one's remaining quota and reset (seconds) in ``RateLimit``."""
    binding = decision.binding
    if binding is None:
        return {}
    policies = ", ".join(f'"{r.policy}";q={r.limit};w={r.window_s:g}' for r in decision.results)
    reset = max(0, round(binding.reset_s))
    return {
        "RateLimit-Policy": policies,
        "RateLimit": f'"{binding.policy}";r={binding.remaining};t={reset}',
    }


def status_for(exc: ApplicationError | DomainError) -> int:
    """The code's own row, else the row of the error's class (a specific ``model_timeout`` is
    still a model error), else 500."""
    codes = [exc.code] + [c.__dict__["code"] for c in type(exc).__mro__ if "code" in c.__dict__]
    for code in codes:
        status = STATUS_BY_CODE.get(code)
        if status is not None:
            return status
    return 500


# A server-side failure's own message may quote a driver, a path or an upstream: clients get
# one of these, the log gets the message (ADR 0039).
_SERVER_DETAILS = {
    500: "an unexpected error occurred; it has been logged",
    502: "an upstream service failed; retry shortly",
    503: "a service this request needs is unavailable; retry shortly",
}


def _public_detail(status: int, code: str, detail: str, request: Request) -> str:
    if status < 500:
        return detail
    log.warning("%s on %s %s: %s", code, request.method, request.url.path, detail)
    return _SERVER_DETAILS.get(status, _SERVER_DETAILS[500])


def on_application_error(request: Request, exc: ApplicationError) -> Response[bytes]:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        if isinstance(exc.decision, RateDecision):
            headers.update(rate_headers(exc.decision))
    if exc.code == "unauthenticated":
        headers = {"WWW-Authenticate": 'Bearer realm="sba"'}
    status = status_for(exc)
    if status == 503:
        retry = exc.retry_after_s if isinstance(exc, ServiceUnavailable) else None
        headers = _unavailable(request, exc.code, retry)
    detail = _public_detail(status, exc.code, exc.message, request)
    return problem(exc.code, detail, status=status, instance=request.url.path, headers=headers)


def _unavailable(request: Request, code: str, retry_after_s: float | None) -> dict[str, str]:
    """A 503 is counted by code and always says when to try again (a second unless the error
    knows better)."""
    counts = request.app.state.get(REFUSALS_STATE)
    if counts is not None:
        counts[code] = counts.get(code, 0) + 1
    return {"Retry-After": str(max(1, math.ceil(retry_after_s or 1)))}


def on_domain_error(request: Request, exc: DomainError) -> Response[bytes]:
    status = status_for(exc)
    detail = _public_detail(status, exc.code, exc.message, request)
    return problem(exc.code, detail, status=status, instance=request.url.path)


def on_http_exception(request: Request, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return problem("validation_failed", str(exc.detail), status=422, instance=request.url.path)
    code = _CODE_BY_STATUS.get(status, "internal_error" if status >= 500 else "bad_request")
    detail = _public_detail(status, code, str(exc.detail), request)
    headers = exc.headers
    if status == 503:
        headers = {**_unavailable(request, code, None), **(exc.headers or {})}
    return problem(code, detail, status=status, instance=request.url.path, headers=headers)


def on_unexpected(request: Request, exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        "internal_error",
        "an unexpected error occurred; it has been logged",
        instance=request.url.path,
    )


EXCEPTION_HANDLERS = {
    ApplicationError: on_application_error,
    DomainError: on_domain_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "REFUSALS_STATE", "STATUS_BY_CODE", "problem"]
