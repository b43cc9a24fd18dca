"""Knowledge-base use cases: ingest, read, search, delete."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from application.authz import authorize
from application.errors import InvalidInput, NotFound, ServiceUnavailable
from application.jobs.ports import JobQueue
from application.knowledge.ports import ChunkVectors, Embedder, KnowledgeSearch, KnowledgeStore
from application.pagination import Page, check_limit, decode_cursor, page_of
from application.ports import KB_CACHE_TAG, Cache, Clock
from domain.audit.model import AuditEvent
from domain.errors import DomainError
from domain.ids import TenantId, new_id
from domain.jobs.model import Job
from domain.knowledge.model import Chunk, IndexState, IndexStatus, KbDocument, SearchHit
from domain.knowledge.text import ContentType, to_plain_text
from domain.knowledge.vectors import fuse, pack
from domain.tenancy.model import Principal, Scope

MAX_QUERY = 500
log = logging.getLogger("sba.knowledge")

INDEX_JOB = "kb.index"


def document_tag(document_id: str) -> str:
    """The cache tag of everything cached from one knowledge-base document."""
    return f"doc:{document_id}"


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
    status: IndexStatus
    replaced: bool


async def forget_answers(cache: Cache | None, tenant_id: str, *tags: str) -> None:
    """The knowledge base changed: cached answers grounded on it (and entries carrying
    ``tags``) are dropped. If the cache cannot be reached they expire with their time to live
    instead."""
    if cache is None:
        return
    try:
        await cache.invalidate(tenant_id, [KB_CACHE_TAG, *tags])
    except ServiceUnavailable as exc:
        log.warning("cached answers of %s not dropped now (%s)", tenant_id, exc.message)


def index_job(tenant_id: TenantId, document_id: str, digest: str) -> Job:
    return Job(
        kind=INDEX_JOB,
        tenant_id=tenant_id,
        key=f"{document_id}@{digest}",
        args={"document_id": document_id, "digest": digest},
    )


class IngestDocument:
    """Validates and saves a document (an existing id is a new version of it), then queues its
    chunking and indexing. With the in-process queue indexing is done when this returns; with
    a broker the status says QUEUED until a worker has indexed it."""

    def __init__(
        self,
        store: KnowledgeStore,
        clock: Clock,
        queue: JobQueue,
        *,
        max_bytes: int = 512 * 1024,
        cache: Cache | None = None,
    ) -> None:
        self._cache = cache
        self._store = store
        self._clock = clock
        self._queue = queue
        self._max_bytes = max_bytes

    async def __call__(self, cmd: IngestCommand) -> Ingested:
        authorize(cmd.principal, Scope.KB_WRITE, write=True, action="change the knowledge base")
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
            # Refused now rather than failing in the indexing job: a document must have text.
            to_plain_text(document.content, document.content_type)
        except DomainError as exc:
            raise InvalidInput(exc.message) from exc
        audit = AuditEvent(
            actor=cmd.principal.subject,
            action="kb.document.replaced" if existing is not None else "kb.document.added",
            subject=document.id,
            details={"digest": document.digest(), "content_type": document.content_type.value},
        )
        status = await self._store.save(document, audit=audit)
        await forget_answers(self._cache, tenant, document_tag(document.id))
        if status.state is not IndexState.INDEXED:
            try:
                await self._queue.enqueue(index_job(tenant, document.id, status.digest))
            except ServiceUnavailable:
                # Saved but never queued, its indexing would stay QUEUED for good: it fails
                # now, the caller hears the queue is down, and posting it again queues it.
                await self._store.mark_failed(
                    tenant,
                    document.id,
                    status.digest,
                    "indexing could not be queued; post the document again",
                    now_ms=self._clock.now_ms(),
                )
                raise
            status = await self._store.status(tenant, document.id) or status
        return Ingested(document=document, status=status, replaced=existing is not None)


class IndexDocument:
    """The ``kb.index`` job: chunks the version the job names and swaps its chunks in. A job
    for a version that is no longer current, or already indexed, does nothing, so a redelivered
    or overtaken job never indexes twice. The last failed attempt marks the document FAILED."""

    def __init__(
        self,
        store: KnowledgeStore,
        clock: Clock,
        *,
        chunk_chars: int = 800,
        chunk_overlap: int = 120,
        cache: Cache | None = None,
        last_attempt: int = 5,
        embedder: Embedder | None = None,
        vectors: ChunkVectors | None = None,
        embed_batch: int = 64,
    ) -> None:
        self._store = store
        self._clock = clock
        self._chunk_chars = chunk_chars
        self._chunk_overlap = chunk_overlap
        self._cache = cache
        self._last_attempt = last_attempt
        self._embedder = embedder if vectors is not None else None
        self._vectors = vectors
        self._embed_batch = max(embed_batch, 1)

    async def __call__(self, job: Job) -> None:
        tenant, doc_id, digest = job.tenant_id, job.args["document_id"], job.args["digest"]
        document = await self._store.get(tenant, doc_id)
        if document is None or document.digest() != digest:
            return
        status = await self._store.status(tenant, doc_id)
        indexed = status is not None and status.indexed_digest == digest
        if indexed and not await self._needs_vectors(tenant, doc_id, digest):
            return
        try:
            chunks = document.chunks(max_chars=self._chunk_chars, overlap=self._chunk_overlap)
            if not indexed:
                await self._store.index(tenant, doc_id, digest, chunks, now_ms=self._clock.now_ms())
            # Embedding follows indexing: lexical search has the new version at once, and a
            # provider outage retries only the embedding (the index step is done once).
            if self._embedder is not None and self._vectors is not None and chunks:
                await self._embed(tenant, doc_id, digest, chunks)
        except Exception as exc:
            if job.attempt >= self._last_attempt:
                await self._store.mark_failed(
                    tenant,
                    doc_id,
                    digest,
                    str(exc) or type(exc).__name__,
                    now_ms=self._clock.now_ms(),
                )
            raise
        await forget_answers(self._cache, tenant, document_tag(doc_id))

    async def _needs_vectors(self, tenant: TenantId, doc_id: str, digest: str) -> bool:
        if self._embedder is None or self._vectors is None:
            return False
        return not await self._vectors.has_vectors(tenant, doc_id, digest, self._embedder.model)

    async def _embed(
        self, tenant: TenantId, doc_id: str, digest: str, chunks: Sequence[Chunk]
    ) -> None:
        assert self._embedder is not None and self._vectors is not None
        packed: list[tuple[int, bytes]] = []
        for start in range(0, len(chunks), self._embed_batch):
            batch = chunks[start : start + self._embed_batch]
            vectors = await self._embedder.embed([c.text for c in batch])
            if len(vectors) != len(batch):
                raise ServiceUnavailable(
                    f"the embeddings provider returned {len(vectors)} vectors for {len(batch)}"
                )
            packed.extend((c.ordinal, pack(v)) for c, v in zip(batch, vectors, strict=True))
        await self._vectors.set_vectors(tenant, doc_id, digest, self._embedder.model, packed)


class GetDocument:
    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def __call__(
        self, principal: Principal, document_id: str
    ) -> tuple[KbDocument, IndexStatus]:
        authorize(principal, Scope.KB_READ, write=False, action="read the knowledge base")
        document = await self._store.get(principal.tenant_id, document_id)
        status = await self._store.status(principal.tenant_id, document_id)
        if document is None or status is None:
            raise NotFound(f"no document {document_id}")
        return document, status


class ListDocuments:
    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def __call__(
        self, principal: Principal, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[KbDocument]:
        """A page of the tenant's documents, by title."""
        authorize(principal, Scope.KB_READ, write=False, action="read the knowledge base")
        size = check_limit(limit)
        after = None
        if cursor is not None:
            title, doc_id = decode_cursor(cursor, (str, str))
            after = (str(title), str(doc_id))
        found = await self._store.list_documents(principal.tenant_id, after=after, limit=size + 1)
        return page_of(found, size, lambda d: (d.title, d.id))


class DeleteDocument:
    def __init__(
        self, store: KnowledgeStore, cache: Cache | None = None, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock

    async def __call__(self, principal: Principal, document_id: str) -> None:
        authorize(principal, Scope.KB_WRITE, write=True, action="change the knowledge base")
        audit = AuditEvent(
            actor=principal.subject, action="kb.document.deleted", subject=document_id
        )
        now = self._clock.now_ms() if self._clock is not None else 0
        if not await self._store.delete(principal.tenant_id, document_id, audit=audit, at_ms=now):
            raise NotFound(f"no document {document_id}")
        await forget_answers(self._cache, principal.tenant_id, document_tag(document_id))


class SearchKnowledge:
    def __init__(self, store: KnowledgeSearch) -> None:
        self._store = store

    async def __call__(self, principal: Principal, query: str, limit: int = 5) -> list[SearchHit]:
        authorize(principal, Scope.KB_READ, write=False, action="search the knowledge base")
        query = query.strip()
        if not query:
            raise InvalidInput("the query q must not be empty")
        if len(query) > MAX_QUERY:
            raise InvalidInput(f"the query is longer than {MAX_QUERY} characters")
        if not 1 <= limit <= 50:
            raise InvalidInput("limit must be between 1 and 50")
        return await self._store.search(principal.tenant_id, query, limit=limit)


class HybridKnowledgeSearch:
    """Lexical and semantic search fused by reciprocal rank (``domain.knowledge.vectors``):
    the query's embedding finds chunks that share no word with it, the lexical ranking keeps
    exact names and numbers on top. Each ranking contributes its best ``pool`` chunks. If the
    embeddings provider cannot answer, the search is lexical rather than failed."""

    def __init__(
        self,
        store: KnowledgeSearch,
        vectors: ChunkVectors,
        embedder: Embedder,
        *,
        pool: int = 40,
    ) -> None:
        self._store = store
        self._vectors = vectors
        self._embedder = embedder
        self._pool = pool

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        pool = max(self._pool, limit)
        lexical = await self._store.search(tenant_id, query, limit=pool)
        if not query.strip():
            return lexical[:limit]
        try:
            [vector] = await self._embedder.embed([query])
            target = pack(vector)
        except (ServiceUnavailable, DomainError, ValueError) as exc:
            log.warning("semantic search unavailable, answering lexically: %s", exc)
            return lexical[:limit]
        semantic = await self._vectors.nearest(tenant_id, self._embedder.model, target, limit=pool)
        return fuse([lexical, semantic], limit=limit)


class CachedKnowledgeSearch:
    """``KnowledgeSearch`` through the tenant's cache: results carry the ``kb`` tag, which
    every change to the tenant's knowledge base drops. An unreachable cache is a miss."""

    def __init__(self, inner: KnowledgeSearch, cache: Cache, *, ttl_s: float = 300.0) -> None:
        self._inner = inner
        self._cache = cache
        self._ttl_s = ttl_s

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        key = "kbs:" + hashlib.sha256(f"{limit}\0{query}".encode()).hexdigest()[:32]
        try:
            raw = await self._cache.get(tenant_id, key)
        except ServiceUnavailable:
            raw = None
        if raw is not None:
            return [SearchHit(**h) for h in json.loads(raw)]
        hits = await self._inner.search(tenant_id, query, limit=limit)
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(
                tenant_id,
                key,
                json.dumps([dataclasses.asdict(h) for h in hits]).encode(),
                ttl_s=self._ttl_s,
                tags=(KB_CACHE_TAG,),
            )
        return hits
