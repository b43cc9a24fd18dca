"""Plain text out of the formats documents arrive in."""

from __future__ import annotations

import enum
import re
from html.parser import HTMLParser

from domain.errors import InvariantViolated


class ContentType(enum.StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"


_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "pre",
        "blockquote",
        "hr",
    }
)
_SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript", "head"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag not in ("br", "li", "tr") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_SPACES = re.compile(r"[ \t]+")


def to_plain_text(content: str, content_type: ContentType) -> str:
    """Markdown and text are kept as written (Markdown reads well as text and its headings help
    search); HTML loses its tags, scripts and styles but keeps its paragraphs."""
    if content_type is ContentType.HTML:
        extractor = _TextExtractor()
        extractor.feed(content)
        extractor.close()
        content = "".join(extractor.parts)
        content = _SPACES.sub(" ", content)
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    text = _BLANKS.sub("\n\n", content).strip()
    if not text:
        raise InvariantViolated("the document has no text")
    return text
