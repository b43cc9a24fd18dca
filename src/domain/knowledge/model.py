"""Knowledge-base documents and their chunks."""

from __future__ import annotations

import enum
import hashlib
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

    def digest(self) -> str:
        """Names this version of the document: what indexing it produced is valid while the
        digest is the same."""
        h = hashlib.sha256()
        for part in (self.content_type.value, self.title, self.content):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:32]

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


class IndexState(enum.StrEnum):
    QUEUED = "queued"  # saved; chunking and indexing are queued (search may show an older version)
    INDEXED = "indexed"  # search reflects this version
    FAILED = "failed"  # indexing failed on every attempt; see ``error``


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexStatus:
    """Where a document's indexing stands. ``generation`` counts committed indexings: a
    redelivered index job that finds its digest already indexed does not add one."""

    state: IndexState
    digest: str
    indexed_digest: str | None = None
    chunks: int = 0
    generation: int = 0
    error: str | None = None
    updated_at_ms: int = 0
