"""What clients send: every JSON request body is decoded here, so every one is held to the
same rules (valid JSON, the route's shape, at most ``MAX_JSON_DEPTH`` levels of nesting)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from application.errors import InvalidInput
from application.json_limits import TOO_DEEP, json_too_deep

T = TypeVar("T")


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
    return value


async def json_body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T]) -> T:
    return decode_json(decoder, await request.body())
