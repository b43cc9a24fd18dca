"""The JSON log formatter: context ids, redaction of secrets."""

from __future__ import annotations

import json
import logging

from hypothesis import assume, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from adapters.observability.logs import REDACTED, JsonFormatter, is_secret_key, scrub
from application.context import current_request_id, current_tenant


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("sba.test", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_a_line_carries_the_current_trace_request_and_tenant() -> None:
    tracer = TracerProvider().get_tracer("t")
    rid = current_request_id.set("req-1")
    tenant = current_tenant.set("ten_1")
    try:
        with tracer.start_as_current_span("s") as span:
            line = json.loads(JsonFormatter().format(record("hello %s", "world")))
        ctx = span.get_span_context()
    finally:
        current_request_id.reset(rid)
        current_tenant.reset(tenant)
    assert line["message"] == "hello world" and line["level"] == "INFO"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["request_id"] == "req-1" and line["tenant"] == "ten_1"
    assert line["ts"].endswith("Z")


def test_outside_any_span_or_request_no_ids_are_invented() -> None:
    line = json.loads(JsonFormatter().format(record("plain")))
    assert not {"trace_id", "span_id", "request_id", "tenant"} & set(line)


def test_secret_fields_and_credentials_in_text_are_redacted() -> None:
    key = "sba_0123456789ab_" + "S" * 43
    line = json.loads(
        JsonFormatter().format(
            record(
                "calling with Authorization: Bearer eyJhbGciOi.payload.sig and key %s",
                key,
                api_key="sk-live-123",
                password="hunter2",
                headers={"Authorization": "Basic dXNlcjpwYXNz", "Accept": "text/plain"},
                input_tokens=12,
                note=f"stripe sk_live_abcdef and {key}",
            )
        )
    )
    text = json.dumps(line)
    for secret in ("eyJhbGciOi", "hunter2", "sk-live-123", "dXNlcjpwYXNz", "S" * 43, "abcdef"):
        assert secret not in text
    assert line["api_key"] == REDACTED and line["password"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "text/plain"}
    # Counting tokens is not a secret.
    assert line["input_tokens"] == 12
    assert "Bearer [redacted]" in line["message"]


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=20))
def test_key_names_ending_like_a_secret_are_secret(stem: str) -> None:
    for suffix in ("_secret", "_password", "_token", "_api_key"):
        assert is_secret_key(stem + suffix)
    assert not is_secret_key(stem + "_tokens")


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=60))
def test_scrubbing_never_leaves_a_bearer_credential(noise: str) -> None:
    token = "abc.DEF-123_xyz"
    assume(token not in noise)
    assert token not in scrub(f"{noise} Bearer {token} {noise}")
    assert token not in scrub(f"{noise}\tbearer  {token}")
