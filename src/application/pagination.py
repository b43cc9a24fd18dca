"""Cursor pagination for every list the API returns: a page of at most ``limit`` items and,
when more follow, an opaque cursor that continues after the last one. A cursor names where
the page ended (a sort key), not an offset, so items added or removed meanwhile neither repeat
nor go missing from the rest of the listing."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from application.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    # Send it back as ``cursor`` for the next page; None on the last one.
    next_cursor: str | None = None


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    return limit


def encode_cursor(*key: str | int) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, shape: Sequence[type]) -> tuple[str | int, ...]:
    """The sort key a cursor carries, checked against ``shape`` (the key's types)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(shape)
        or not all(type(part) is kind for part, kind in zip(key, shape, strict=True))
    ):
        raise InvalidInput("cursor is not one this listing gave out", code="invalid_cursor")
    return tuple(key)


def page_of(items: list[T], limit: int, key_of: Callable[[T], tuple[str | int, ...]]) -> Page[T]:
    """``items`` fetched as ``limit + 1`` (the extra one only tells that more follow) as a page
    whose cursor is ``key_of`` its last item."""
    if len(items) <= limit:
        return Page(items)
    kept = items[:limit]
    return Page(kept, encode_cursor(*key_of(kept[-1])))
