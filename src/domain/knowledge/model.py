"""Knowledge-base documents and their chunks."""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.errors import InvariantViolated
from domain.ids import TenantId, is_valid_client_id
from domain.knowledge.chunking import chunk_spans
from domain.knowledge.text import ContentType, to_plain_text

MAX_TITLE = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    ordinal: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KbDocument:
    id: str
    tenant_id: TenantId
    title: str
    content: str
    content_type: ContentType
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    created_at_ms: int = 0
    updated_at_ms: int = 0

    def __post_init__(self) -> None:
        if not is_valid_client_id(self.id):
            raise InvariantViolated(f"document id {self.id!r} is not a valid identifier")
        if not self.title.strip() or len(self.title) > MAX_TITLE:
            raise InvariantViolated(f"a title is 1 to {MAX_TITLE} characters")

    def chunks(self, *, max_chars: int = 800, overlap: int = 120) -> list[Chunk]:
        text = to_plain_text(self.content, self.content_type)
        return [
            Chunk(ordinal=s.ordinal, text=text[s.start : s.end])
            for s in chunk_spans(text, max_chars=max_chars, overlap=overlap)
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit:
    document_id: str
    title: str
    source: str
    ordinal: int
    snippet: str
    score: float
