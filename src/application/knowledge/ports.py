"""Ports of the knowledge context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.ids import TenantId
from domain.knowledge.model import Chunk, KbDocument, SearchHit


class KnowledgeSearch(Protocol):
    """Lexical search over one tenant's chunks, best first. Never returns another tenant's
    chunk; a query with no searchable words returns nothing."""

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]: ...


class KnowledgeStore(KnowledgeSearch, Protocol):
    """A tenant's documents and their chunks. ``put`` replaces a document with the same id
    (and all its chunks) atomically; search sees a document as soon as ``put`` returns."""

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None: ...

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None: ...

    async def list_documents(self, tenant_id: TenantId) -> list[KbDocument]: ...

    async def delete(self, tenant_id: TenantId, document_id: str) -> bool: ...

    async def chunk_count(self, tenant_id: TenantId, document_id: str) -> int: ...
