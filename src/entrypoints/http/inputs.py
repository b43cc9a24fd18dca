"""What clients send: every JSON request body is decoded here, so every one is held to the
same rules (valid JSON, the route's shape, at most ``MAX_JSON_DEPTH`` levels of nesting, no NUL
characters); and no path or query may carry a NUL either (ADR 0039).

Postgres cannot store U+0000 in text while SQLite can: refusing it here makes both databases
answer alike, and keeps such values from reaching either."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from application.errors import InvalidInput, NotFound
from application.json_limits import TOO_DEEP, json_too_deep

T = TypeVar("T")
NUL_TEXT = "text may not contain NUL characters (\\u0000)"


def _nul_at(value: object) -> str | None:
    """Where (as ``$.a[0].b``) the first string or key holding a NUL is, if any."""
    stack: list[tuple[object, str]] = [(value, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    return path
                stack.append((child, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{n}]") for n, child in enumerate(node))
    return None


def decode_json(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """``raw`` decoded by ``decoder``; 400 ``invalid_json``, 400 ``json_too_deep`` or 422
    ``validation_failed`` otherwise."""
    try:
        value = decoder.decode(raw)
    except RecursionError:
        raise InvalidInput(TOO_DEEP, code="json_too_deep") from None
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            f"the request body is not valid: {exc}", code="validation_failed"
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if json_too_deep(value):
        raise InvalidInput(TOO_DEEP, code="json_too_deep")
    # JSON can carry a NUL only escaped, so most bodies are cleared by one search.
    if b"\\u0000" in raw:
        where = _nul_at(msgspec.json.decode(raw))
        if where is not None:
            raise InvalidInput(f"{NUL_TEXT} - at `{where}`", code="validation_failed")
    return value


async def json_body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T]) -> T:
    return decode_json(decoder, await request.body())


def nul_guard_middleware(app: ASGIApp) -> ASGIApp:
    """A path holding a NUL names nothing that can exist (404); a query holding one is a 422."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                raise NotFound("nothing has an id with a NUL character")
            if b"%00" in scope.get("query_string", b""):
                raise InvalidInput(f"query parameters: {NUL_TEXT}", code="validation_failed")
        await app(scope, receive, send)

    return middleware
