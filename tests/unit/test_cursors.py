"""Cursors are opaque to clients: whatever a client sends instead of one is a 400, never a 500."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from application.errors import InvalidInput
from application.pagination import decode_cursor, encode_cursor


def test_a_cursor_nested_beyond_the_decoders_depth_is_refused_as_invalid() -> None:
    deep = base64.urlsafe_b64encode(("[" * 100_000 + "]" * 100_000).encode()).decode()
    with pytest.raises(InvalidInput) as refused:
        decode_cursor(deep, (str,))
    assert refused.value.code == "invalid_cursor"


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_an_invalid_cursor(text: str) -> None:
    code = None
    try:
        decode_cursor(text, (int, str))
    except InvalidInput as exc:
        code = exc.code
    assert code in (None, "invalid_cursor")


@given(st.integers(min_value=0, max_value=2**53), st.text(max_size=50))
def test_a_cursor_given_out_reads_back_as_its_key(at: int, key: str) -> None:
    assert decode_cursor(encode_cursor(at, key), (int, str)) == (at, key)
