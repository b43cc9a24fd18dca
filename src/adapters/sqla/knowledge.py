"""The knowledge store on SQLite: documents and chunks in tables, search through FTS5."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqla.tables import kb_chunks, kb_documents
from application.errors import ServiceUnavailable
from domain.ids import TenantId
from domain.knowledge.model import Chunk, KbDocument, SearchHit
from domain.knowledge.query import search_terms
from domain.knowledge.text import ContentType

_SEARCH = text(
    "SELECT document_id, ordinal, title, "
    "snippet(kb_chunks_fts, 1, '', '', '…', 48) AS snippet, bm25(kb_chunks_fts, 2.0, 1.0) AS rank "
    "FROM kb_chunks_fts WHERE kb_chunks_fts MATCH :match AND tenant_id = :tenant "
    "ORDER BY rank, document_id, ordinal LIMIT :limit"
)
_FTS_DELETE = text("DELETE FROM kb_chunks_fts WHERE tenant_id = :tenant AND document_id = :doc")
_FTS_INSERT = text(
    "INSERT INTO kb_chunks_fts (title, text, tenant_id, document_id, ordinal) "
    "VALUES (:title, :text, :tenant, :doc, :ordinal)"
)


def _document(r: Any) -> KbDocument:
    return KbDocument(
        id=r.id,
        tenant_id=TenantId(r.tenant_id),
        title=r.title,
        content=r.content,
        content_type=ContentType(r.content_type),
        source=r.source,
        metadata=json.loads(r.metadata),
        created_at_ms=r.created_at_ms,
        updated_at_ms=r.updated_at_ms,
    )


def fts_match(terms: list[str]) -> str:
    # Each term quoted (so no FTS5 operator can be injected) and prefix-matched, any of them.
    return " OR ".join('"' + t.replace('"', '""') + '"*' for t in terms)


class SqliteKnowledgeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None:
        tenant, doc_id = document.tenant_id, document.id
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(kb_documents).where(
                        kb_documents.c.tenant_id == tenant, kb_documents.c.id == doc_id
                    )
                )
                await conn.execute(_FTS_DELETE, {"tenant": tenant, "doc": doc_id})
                await conn.execute(
                    insert(kb_documents).values(
                        tenant_id=tenant,
                        id=doc_id,
                        title=document.title,
                        content_type=document.content_type.value,
                        content=document.content,
                        source=document.source,
                        metadata=json.dumps(document.metadata),
                        created_at_ms=document.created_at_ms,
                        updated_at_ms=document.updated_at_ms,
                    )
                )
                if chunks:
                    await conn.execute(
                        insert(kb_chunks),
                        [
                            {
                                "tenant_id": tenant,
                                "document_id": doc_id,
                                "ordinal": c.ordinal,
                                "text": c.text,
                            }
                            for c in chunks
                        ],
                    )
                    await conn.execute(
                        _FTS_INSERT,
                        [
                            {
                                "title": document.title,
                                "text": c.text,
                                "tenant": tenant,
                                "doc": doc_id,
                                "ordinal": c.ordinal,
                            }
                            for c in chunks
                        ],
                    )
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None:
        try:
            async with self._engine.connect() as conn:
                r = (
                    await conn.execute(
                        select(kb_documents).where(
                            kb_documents.c.tenant_id == tenant_id, kb_documents.c.id == document_id
                        )
                    )
                ).first()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc
        return None if r is None else _document(r)

    async def list_documents(self, tenant_id: TenantId) -> list[KbDocument]:
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(kb_documents)
                    .where(kb_documents.c.tenant_id == tenant_id)
                    .order_by(func.lower(kb_documents.c.title), kb_documents.c.id)
                )
                return [_document(r) for r in rows]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc

    async def delete(self, tenant_id: TenantId, document_id: str) -> bool:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(_FTS_DELETE, {"tenant": tenant_id, "doc": document_id})
                await conn.execute(
                    delete(kb_chunks).where(
                        kb_chunks.c.tenant_id == tenant_id, kb_chunks.c.document_id == document_id
                    )
                )
                result = await conn.execute(
                    delete(kb_documents).where(
                        kb_documents.c.tenant_id == tenant_id, kb_documents.c.id == document_id
                    )
                )
                return bool(result.rowcount)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc

    async def chunk_count(self, tenant_id: TenantId, document_id: str) -> int:
        try:
            async with self._engine.connect() as conn:
                return int(
                    (
                        await conn.execute(
                            select(func.count()).where(
                                kb_chunks.c.tenant_id == tenant_id,
                                kb_chunks.c.document_id == document_id,
                            )
                        )
                    ).scalar_one()
                )
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        terms = search_terms(query)
        if not terms:
            return []
        try:
            async with self._engine.connect() as conn:
                rows = (
                    await conn.execute(
                        _SEARCH, {"match": fts_match(terms), "tenant": tenant_id, "limit": limit}
                    )
                ).all()
                sources = {}
                if rows:
                    ids = {r.document_id for r in rows}
                    sources = dict(
                        (
                            await conn.execute(
                                select(kb_documents.c.id, kb_documents.c.source).where(
                                    kb_documents.c.tenant_id == tenant_id,
                                    kb_documents.c.id.in_(ids),
                                )
                            )
                        ).all()
                    )
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"the knowledge base is unavailable: {exc}") from exc
        return [
            SearchHit(
                document_id=r.document_id,
                title=r.title,
                source=sources.get(r.document_id, ""),
                ordinal=int(r.ordinal),
                snippet=r.snippet,
                score=-float(r.rank),
            )
            for r in rows
        ]
