"""Ports of the knowledge context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.knowledge.model import Chunk, IndexStatus, KbDocument, SearchHit


class KnowledgeSearch(Protocol):
    """Lexical search over one tenant's chunks, best first. Never returns another tenant's
    chunk; a query with no searchable words returns nothing."""

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]: ...


class KnowledgeStore(KnowledgeSearch, Protocol):
    """A tenant's documents, their chunks and where their indexing stands.

    ``save`` stores a document's new version (its chunks stay those of the last indexed version
    until ``index``); it returns the status, QUEUED unless this very version is already indexed.
    ``index`` replaces the chunks atomically, but only for the version (digest) the document
    still has, and only once per version: a stale or repeated call changes nothing and returns
    the status as it is (None when the document is gone). ``put`` saves and indexes at once.
    Search sees chunks as soon as the call that wrote them returns."""

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None: ...

    async def save(self, document: KbDocument, *, audit: AuditEvent | None = None) -> IndexStatus:
        """``audit``: recorded in the tenant's audit trail in the same transaction, at the
        document's ``updated_at_ms``."""
        ...

    async def index(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        chunks: Sequence[Chunk],
        *,
        now_ms: int,
    ) -> IndexStatus | None: ...

    async def mark_failed(
        self, tenant_id: TenantId, document_id: str, digest: str, error: str, *, now_ms: int
    ) -> None: ...

    async def status(self, tenant_id: TenantId, document_id: str) -> IndexStatus | None: ...

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None: ...

    async def list_documents(
        self,
        tenant_id: TenantId,
        *,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[KbDocument]:
        """The tenant's documents by title (case-folded), then id; with ``after`` (a title and
        an id), only those that sort after it; at most ``limit`` of them."""
        ...

    async def delete(
        self,
        tenant_id: TenantId,
        document_id: str,
        *,
        audit: AuditEvent | None = None,
        at_ms: int = 0,
    ) -> bool:
        """``audit``: recorded, at ``at_ms``, in the same transaction when something was
        deleted."""
        ...

    async def chunk_count(self, tenant_id: TenantId, document_id: str) -> int: ...


class Embedder(Protocol):
    """Turns texts into embedding vectors (one per text, in order) with one model. Raises
    ``ServiceUnavailable`` when the provider cannot answer."""

    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class ChunkVectors(Protocol):
    """Embedding vectors of a tenant's indexed chunks, per model, stored unit-length as packed
    float32 (``domain.knowledge.vectors.pack``).

    ``set_vectors`` stores one vector per chunk ordinal of the version (digest) the document
    has indexed; for any other version it changes nothing and returns False. Re-indexing a
    document drops its vectors. ``has_vectors`` says whether every chunk of that indexed
    version has a vector of ``model``. ``nearest`` ranks the tenant's chunks that have one by
    cosine similarity to the packed unit ``query``, best first; never another tenant's."""

    async def set_vectors(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        model: str,
        vectors: Sequence[tuple[int, bytes]],
    ) -> bool: ...

    async def has_vectors(
        self, tenant_id: TenantId, document_id: str, digest: str, model: str
    ) -> bool: ...

    async def nearest(
        self, tenant_id: TenantId, model: str, query: bytes, *, limit: int
    ) -> list[SearchHit]: ...
