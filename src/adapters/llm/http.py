"""What the HTTP chat model adapters share: retries before the first chunk, the translation of
httpx errors and HTTP statuses into ``ModelError`` codes, and Server-Sent Events framing."""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from application.conversation.ports import ChatChunk
from application.errors import ModelError

# The codes worth another attempt: the same request may well succeed a moment later.
RETRYABLE_CODES = frozenset({"model_timeout", "model_rate_limited", "model_unavailable"})

# Every exception httpx raises on purpose; none of them may cross the port.
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict)

# An error body is read only this far: a proxy's HTML page is no message for a run.
_MAX_ERROR_BODY = 64 * 1024
_MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRetryPolicy:
    """How often and how long to wait before re-sending a request that failed before its first
    chunk. The n-th retry (n from 0) sleeps ``uniform(0, min(max_delay_s, base_delay_s * 2**n))``
    ("full jitter"), or the provider's ``Retry-After`` when it sent one, capped at
    ``max_delay_s``. ``sleep`` and ``uniform`` are injectable so tests neither wait nor guess."""

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    uniform: Callable[[float, float], float] = random.uniform

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays cannot be negative")

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_delay_s)
        return self.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**retry))


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The wait a provider asked for, in seconds: ``retry-after-ms`` (OpenAI) or
    ``Retry-After`` in seconds; an HTTP date or garbage counts as no advice."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


# --- errors ---------------------------------------------------------------------------------


def code_for_status(status: int) -> str:
    if status in (401, 403):
        return "model_auth"
    if status == 429:
        return "model_rate_limited"
    if status == 408:
        # The provider gave up waiting for us: a timeout, worth retrying like one.
        return "model_timeout"
    if status >= 500:
        return "model_unavailable"
    if status >= 400:
        return "model_bad_request"
    return "model_bad_response"


class _ErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    # OpenAI {"error": {message, type, code}}; Anthropic {"type": "error", "error": {type,
    # message}}; Ollama {"error": "..."}; vLLM {"object": "error", "message", "type", "code"}.
    error: _ErrorDetail | str | None = None
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


_error_body = msgspec.json.Decoder(_ErrorBody)

# Key-shaped tokens (sk-…, sk-ant-…, sk-proj-…, even when the provider masked part of them)
# never reach a message: error texts end up in logs and in the client's RUN_ERROR.
_KEY_SHAPED = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_SHAPED.sub("[redacted]", text)


def provider_error(body: bytes) -> tuple[str | None, str | None]:
    """The provider's own message and its error kind (``type``/``code``) from an error body,
    in any of the shapes the supported providers use; ``(None, None)`` for anything else."""
    try:
        parsed = _error_body.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, None
    if isinstance(parsed.error, str):
        return parsed.error or None, None
    if parsed.error is not None:
        detail = parsed.error
        kinds = [str(k) for k in (detail.type, detail.code) if k not in (None, "")]
        return detail.message or None, ", ".join(kinds) or None
    kinds = [str(k) for k in (parsed.type, parsed.code) if k not in (None, "", "error")]
    return parsed.message or None, ", ".join(kinds) or None


def error_for_status(
    provider: str, status: int, body: bytes, secrets: Sequence[str] = ()
) -> ModelError:
    message, kind = provider_error(body)
    if message is None:
        # Not a JSON error body (a proxy's page, plain text): a short excerpt still helps.
        message = " ".join(body[:200].decode("utf-8", "replace").split()) or None
    text = f"{provider} answered HTTP {status}"
    if kind:
        text += f" ({kind})"
    if message:
        text += f": {message}"
    return ModelError(_shorten(redact(text, secrets)), code=code_for_status(status))


def error_for_transport(provider: str, exc: Exception, secrets: Sequence[str] = ()) -> ModelError:
    if isinstance(exc, httpx.TimeoutException):
        what, code = "timed out", "model_timeout"
    elif isinstance(exc, httpx.DecodingError):
        what, code = "sent a body that could not be decoded", "model_bad_response"
    elif isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        what, code = "has an invalid URL", "model_bad_request"
    elif isinstance(exc, httpx.ConnectError):
        what, code = "could not be reached", "model_unavailable"
    else:
        what, code = "connection failed", "model_unavailable"
    detail = str(exc)
    text = f"{provider} {what} ({type(exc).__name__}{': ' + detail if detail else ''})"
    return ModelError(_shorten(redact(text, secrets)), code=code)


def bad_response(provider: str, detail: str, secrets: Sequence[str] = ()) -> ModelError:
    return ModelError(
        _shorten(redact(f"{provider} sent a malformed response: {detail}", secrets)),
        code="model_bad_response",
    )


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "\u2026"


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    try:
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) >= _MAX_ERROR_BODY:
                break
    except _HTTPX_ERRORS:
        # The status already says what went wrong; a body cut short only loses detail.
        pass
    return bytes(body[:_MAX_ERROR_BODY])


# --- Server-Sent Events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: ``event`` is "" when the server named none."""

    event: str
    data: str


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    """Frames ``data:``/``event:`` lines (as ``httpx.Response.aiter_lines()`` gives them) into
    events, per the WHATWG rules: several ``data:`` lines join with newlines, a blank line
    dispatches, ``:`` starts a comment, one space after the colon is dropped. An event cut off
    by the end of the body is discarded, so a truncated stream never yields half a JSON."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        # "id" and "retry" fields mean nothing for a single response.


# --- the request loop -------------------------------------------------------------------------

Translate = Callable[[AsyncIterator[SseEvent]], AsyncGenerator[ChatChunk, None]]


async def stream_chunks(
    client: httpx.AsyncClient,
    *,
    provider: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    retry: HttpRetryPolicy,
    translate: Translate,
    secrets: Sequence[str] = (),
) -> AsyncGenerator[ChatChunk, None]:
    """POSTs ``body`` and streams what ``translate`` makes of the response's SSE events.

    A failure before the first chunk was yielded is retried per ``retry`` when its code is
    retryable; after it, never: the consumer has already acted on the chunks and a second
    answer would not continue the first. Every failure leaves as a ``ModelError``."""
    attempt = 0
    while True:
        started = False
        wait_hint: float | None = None
        try:
            async with client.stream("POST", url, headers=headers, content=body) as response:
                if not response.is_success:
                    wait_hint = retry_after_s(response.headers)
                    raise error_for_status(
                        provider, response.status_code, await _read_capped(response), secrets
                    )
                content_type = response.headers.get("content-type", "")
                if content_type and "event-stream" not in content_type:
                    message, _ = provider_error(await _read_capped(response))
                    raise bad_response(
                        provider,
                        f"expected an event stream, got {content_type}"
                        + (f": {message}" if message else ""),
                        secrets,
                    )
                async with aclosing(translate(iter_sse(response.aiter_lines()))) as chunks:
                    async for chunk in chunks:
                        started = True
                        yield chunk
            return
        except ModelError as exc:
            if started or not _retry_left(exc, attempt, retry):
                raise
        except _HTTPX_ERRORS as exc:
            failure = error_for_transport(provider, exc, secrets)
            if started or not _retry_left(failure, attempt, retry):
                raise failure from exc
        await retry.sleep(retry.delay_s(attempt, wait_hint))
        attempt += 1


def _retry_left(failure: ModelError, attempt: int, retry: HttpRetryPolicy) -> bool:
    return failure.code in RETRYABLE_CODES and attempt + 1 < retry.max_attempts


# --- encoding ---------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    # Tool schemas arrive as read-only Mappings, which msgspec does not encode by itself.
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


json_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
