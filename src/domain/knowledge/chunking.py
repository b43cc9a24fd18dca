"""Splitting a document's text into chunks for search and citation.

Chunks are spans of the text: ``text[start:end]``. Consecutive chunks overlap by at most
``overlap`` characters so that a sentence cut at a border is still found whole in one of them;
every character of the text lies in at least one chunk, and no chunk is longer than
``max_chars``. Borders fall, by preference, after a paragraph, then a line, then a sentence,
then a space, and only inside a word when a word is longer than a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import InvariantViolated


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    ordinal: int
    start: int
    end: int


_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", " ")


def _border(text: str, start: int, limit: int) -> int:
    """The best end for a chunk that starts at ``start`` and may not pass ``limit``."""
    if limit >= len(text):
        return len(text)
    # Do not settle for a border in the first half when a later one exists.
    floor = start + (limit - start) // 2
    for mark in _BREAKS:
        at = text.rfind(mark, floor, limit)
        if at != -1:
            return at + len(mark)
    return limit


def chunk_spans(text: str, *, max_chars: int = 800, overlap: int = 120) -> list[Span]:
    if max_chars < 20:
        raise InvariantViolated("chunks must allow at least 20 characters")
    if not 0 <= overlap < max_chars // 2:
        raise InvariantViolated("overlap must be at least 0 and under half a chunk")
    spans: list[Span] = []
    start = 0
    while start < len(text):
        end = _border(text, start, start + max_chars)
        spans.append(Span(ordinal=len(spans), start=start, end=end))
        if end >= len(text):
            break
        # Step back by the overlap, to a space if there is one, but always move forward.
        back = max(start + 1, end - overlap)
        space = text.find(" ", back, end)
        start = space + 1 if overlap and space != -1 and space + 1 < end else back
        if not overlap:
            start = end
    return spans
