"""Chunking keeps every character, respects its bounds, and prefers natural borders."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvariantViolated
from domain.knowledge.chunking import chunk_spans
from domain.knowledge.text import ContentType, to_plain_text

texts = st.text(
    alphabet=st.sampled_from(list("abcdefgh ijk.\n,?!")), min_size=0, max_size=3000
) | st.text(min_size=0, max_size=500)
sizes = st.tuples(st.integers(20, 400), st.integers(0, 9)).map(lambda t: (t[0], t[0] * t[1] // 20))


@given(texts, sizes)
def test_chunks_cover_every_character_within_bounds(text: str, size: tuple[int, int]) -> None:
    max_chars, overlap = size
    spans = chunk_spans(text, max_chars=max_chars, overlap=overlap)
    if not text:
        assert spans == []
        return
    assert spans[0].start == 0
    assert spans[-1].end == len(text)
    for i, span in enumerate(spans):
        assert span.ordinal == i
        assert 0 < span.end - span.start <= max_chars
    for prev, nxt in itertools.pairwise(spans):
        assert prev.start < nxt.start <= prev.end, "no gap, always forward"
        assert prev.end - nxt.start <= overlap, "overlap bounded"


@given(texts, st.integers(20, 300))
def test_without_overlap_the_chunks_rebuild_the_text_exactly(text: str, max_chars: int) -> None:
    spans = chunk_spans(text, max_chars=max_chars, overlap=0)
    assert "".join(text[s.start : s.end] for s in spans) == text


def test_borders_prefer_paragraphs_then_sentences() -> None:
    text = "First paragraph is here.\n\nSecond one follows. It has two sentences."
    spans = chunk_spans(text, max_chars=40, overlap=0)
    assert text[spans[0].start : spans[0].end] == "First paragraph is here.\n\n"


@pytest.mark.parametrize(("max_chars", "overlap"), [(10, 0), (100, 50), (100, -1)])
def test_invalid_bounds_are_refused(max_chars: int, overlap: int) -> None:
    with pytest.raises(InvariantViolated):
        chunk_spans("text", max_chars=max_chars, overlap=overlap)


def test_html_loses_tags_scripts_and_styles_but_keeps_paragraphs() -> None:
    html = (
        "<html><head><style>p{}</style></head><body><h1>Refunds</h1><p>Within 30&nbsp;days."
        "<script>alert(1)</script></p><p>Keep the receipt.</p></body></html>"
    )
    text = to_plain_text(html, ContentType.HTML)
    assert "alert" not in text and "p{}" not in text and "<" not in text
    assert text.splitlines()[0] == "Refunds"
    assert "Within 30\xa0days." in text and "Keep the receipt." in text


def test_a_document_without_text_is_refused() -> None:
    with pytest.raises(InvariantViolated):
        to_plain_text("<p> </p>", ContentType.HTML)
