"""Structured logs: one JSON object per line, with the trace and span ids of the span
current when the record was made, the request id and the tenant. Fields that name a secret
are redacted, and bearer credentials and SBA API keys are scrubbed from message text; message
contents are logged only for tenants that asked for it (``ContentLoggingChatModel``)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import msgspec
from opentelemetry import trace

from application.context import current_request_id, current_tenant

_encode = msgspec.json.Encoder().encode
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "cookie",
        "set_cookie",
        "proxy_authorization",
    }
)
_SECRET_SUFFIXES = ("_secret", "_password", "_token", "_api_key")
_CREDENTIALS = re.compile(
    r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+|\bsba_[0-9a-f]{12}_[A-Za-z0-9_-]+|"
    r"\b(sk|rk)_(live|test)_[A-Za-z0-9]+"
)
REDACTED = "[redacted]"


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def scrub(text: str) -> str:
    """The text with bearer/basic credentials, SBA API keys and Stripe keys replaced."""
    if not text:
        return text
    return _CREDENTIALS.sub(
        lambda m: f"{m.group(1)} {REDACTED}" if m.group(1) else REDACTED,
        text,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        if request_id := current_request_id.get():
            entry["request_id"] = request_id
        if tenant := current_tenant.get():
            entry["tenant"] = tenant
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = REDACTED if is_secret_key(key) else _clean(value)
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return _encode(entry).decode()
