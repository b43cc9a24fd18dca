"""Knowledge-base use cases: ingest, read, search, delete."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from application.errors import Forbidden, InvalidInput, NotFound, ServiceUnavailable
from application.knowledge.ports import KnowledgeStore
from application.ports import KB_CACHE_TAG, Cache, Clock
from domain.errors import DomainError
from domain.ids import new_id
from domain.knowledge.model import KbDocument, SearchHit
from domain.knowledge.text import ContentType
from domain.tenancy.model import Principal

MAX_QUERY = 500
log = logging.getLogger("sba.knowledge")


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestCommand:
    principal: Principal
    title: str
    content: str
    content_type: str = "markdown"
    source: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    document_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingested:
    document: KbDocument
    chunks: int
    replaced: bool


async def forget_answers(cache: Cache | None, tenant_id: str) -> None:
    """The knowledge base changed: cached answers grounded on it are dropped. If the cache
    cannot be reached they expire with their time to live instead."""
    if cache is None:
        return
    try:
        await cache.invalidate(tenant_id, [KB_CACHE_TAG])
    except ServiceUnavailable as exc:
        log.warning("cached answers of %s not dropped now (%s)", tenant_id, exc.message)


class IngestDocument:
    """Validates, chunks and stores a document; an existing id is replaced (re-ingest)."""

    def __init__(
        self,
        store: KnowledgeStore,
        clock: Clock,
        *,
        max_bytes: int = 512 * 1024,
        chunk_chars: int = 800,
        chunk_overlap: int = 120,
        cache: Cache | None = None,
    ) -> None:
        self._cache = cache
        self._store = store
        self._clock = clock
        self._max_bytes = max_bytes
        self._chunk_chars = chunk_chars
        self._chunk_overlap = chunk_overlap

    async def __call__(self, cmd: IngestCommand) -> Ingested:
        if not cmd.principal.can_write:
            raise Forbidden("a read-only principal cannot change the knowledge base")
        size = len(cmd.content.encode())
        if size > self._max_bytes:
            raise InvalidInput(f"the content is {size} bytes; the limit is {self._max_bytes}")
        try:
            content_type = ContentType(cmd.content_type)
        except ValueError as exc:
            kinds = ", ".join(t.value for t in ContentType)
            raise InvalidInput(f"contentType must be one of: {kinds}") from exc
        tenant = cmd.principal.tenant_id
        now = self._clock.now_ms()
        existing = (
            await self._store.get(tenant, cmd.document_id) if cmd.document_id is not None else None
        )
        try:
            document = KbDocument(
                id=cmd.document_id or new_id("doc"),
                tenant_id=tenant,
                title=cmd.title.strip(),
                content=cmd.content,
                content_type=content_type,
                source=cmd.source,
                metadata=dict(cmd.metadata),
                created_at_ms=existing.created_at_ms if existing else now,
                updated_at_ms=now,
            )
            chunks = document.chunks(max_chars=self._chunk_chars, overlap=self._chunk_overlap)
        except DomainError as exc:
            raise InvalidInput(exc.message) from exc
        await self._store.put(document, chunks)
        await forget_answers(self._cache, tenant)
        return Ingested(document=document, chunks=len(chunks), replaced=existing is not None)


class GetDocument:
    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def __call__(self, principal: Principal, document_id: str) -> tuple[KbDocument, int]:
        document = await self._store.get(principal.tenant_id, document_id)
        if document is None:
            raise NotFound(f"no document {document_id}")
        return document, await self._store.chunk_count(principal.tenant_id, document_id)


class ListDocuments:
    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def __call__(self, principal: Principal) -> list[KbDocument]:
        return await self._store.list_documents(principal.tenant_id)


class DeleteDocument:
    def __init__(self, store: KnowledgeStore, cache: Cache | None = None) -> None:
        self._store = store
        self._cache = cache

    async def __call__(self, principal: Principal, document_id: str) -> None:
        if not principal.can_write:
            raise Forbidden("a read-only principal cannot change the knowledge base")
        if not await self._store.delete(principal.tenant_id, document_id):
            raise NotFound(f"no document {document_id}")
        await forget_answers(self._cache, principal.tenant_id)


class SearchKnowledge:
    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def __call__(self, principal: Principal, query: str, limit: int = 5) -> list[SearchHit]:
        query = query.strip()
        if not query:
            raise InvalidInput("the query q must not be empty")
        if len(query) > MAX_QUERY:
            raise InvalidInput(f"the query is longer than {MAX_QUERY} characters")
        if not 1 <= limit <= 50:
            raise InvalidInput("limit must be between 1 and 50")
        return await self._store.search(principal.tenant_id, query, limit=limit)
