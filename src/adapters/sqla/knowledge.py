"""The knowledge store on SQL: documents and chunks in tables; search through SQLite FTS5 or
Postgres full-text search (a generated, weighted ``tsvector`` with a GIN index, in the tenant's
text-search configuration). Both sit behind one port and one contract suite."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, and_, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.scope import TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database
from adapters.sqla.tables import kb_chunks, kb_documents
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.knowledge.model import Chunk, IndexState, IndexStatus, KbDocument, SearchHit
from domain.knowledge.query import search_terms
from domain.knowledge.text import ContentType
from domain.knowledge.vectors import similarity, unpack


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


def _vector_snippet(text: str, width: int = 320) -> str:
    text = text.strip()
    return text if len(text) <= width else text[:width].rstrip() + "…"


async def _rank(rows: Sequence[Any], query: bytes, limit: int) -> list[tuple[float, Any]]:
    """The ``limit`` rows whose embedding is nearest ``query``, best first. Scoring is plain
    Python over every candidate; beyond a few hundred it runs in a thread so that streams on
    this event loop keep flowing."""
    target = unpack(query)

    def score() -> list[tuple[float, Any]]:
        scored = [(similarity(unpack(r.embedding), target), r) for r in rows]
        scored.sort(key=lambda s: (-s[0], s[1].document_id, int(s[1].ordinal)))
        return scored[:limit]

    if len(rows) > 500:
        return await asyncio.to_thread(score)
    return score()


class _SqlKnowledgeStore(ABC):
    """Storage shared by both databases; subclasses index and search."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None:
        async with self._db.begin(TenantScope(document.tenant_id)) as conn:
            await self._save(conn, document)
            await self._index(
                conn, document, document.digest(), chunks, now_ms=document.updated_at_ms
            )

    async def save(self, document: KbDocument, *, audit: AuditEvent | None = None) -> IndexStatus:
        scope = TenantScope(document.tenant_id)
        async with self._db.begin(scope) as conn:
            status = await self._save(conn, document)
            if audit is not None:
                await self._trail(conn, scope).append(
                    document.tenant_id, audit, at_ms=document.updated_at_ms
                )
            return status

    def _trail(self, conn: AsyncConnection, scope: TenantScope) -> SqlaAuditTrail:
        return SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)

    async def _save(self, conn: AsyncConnection, document: KbDocument) -> IndexStatus:
        tenant, doc_id = document.tenant_id, document.id
        digest = document.digest()
        old = await self._status_row(conn, tenant, doc_id, lock=True)
        values: dict[str, object] = {
            "title": document.title,
            "content_type": document.content_type.value,
            "content": document.content,
            "source": document.source,
            "metadata": json.dumps(document.metadata),
            "updated_at_ms": document.updated_at_ms,
            "digest": digest,
        }
        if old is not None and old.indexed_digest == digest:
            values.update(index_state=IndexState.INDEXED.value, index_error=None)
        else:
            values.update(
                index_state=IndexState.QUEUED.value,
                index_error=None,
                index_updated_at_ms=document.updated_at_ms,
            )
        if old is None:
            await conn.execute(
                insert(kb_documents).values(
                    tenant_id=tenant, id=doc_id, created_at_ms=document.created_at_ms, **values
                )
            )
        else:
            await conn.execute(
                update(kb_documents)
                .where(kb_documents.c.tenant_id == tenant, kb_documents.c.id == doc_id)
                .values(**values)
            )
        status = await self._status_row(conn, tenant, doc_id)
        assert status is not None
        return status

    async def index(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        chunks: Sequence[Chunk],
        *,
        now_ms: int,
    ) -> IndexStatus | None:
        async with self._db.begin(TenantScope(tenant_id)) as conn:
            status = await self._status_row(conn, tenant_id, document_id, lock=True)
            if status is None or status.digest != digest or status.indexed_digest == digest:
                return status
            r = (
                await conn.execute(
                    select(kb_documents).where(
                        kb_documents.c.tenant_id == tenant_id, kb_documents.c.id == document_id
                    )
                )
            ).one()
            return await self._index(conn, _document(r), digest, chunks, now_ms=now_ms)

    async def _index(
        self,
        conn: AsyncConnection,
        document: KbDocument,
        digest: str,
        chunks: Sequence[Chunk],
        *,
        now_ms: int,
    ) -> IndexStatus:
        tenant, doc_id = document.tenant_id, document.id
        await self._unindex(conn, tenant, doc_id)
        await conn.execute(
            delete(kb_chunks).where(
                kb_chunks.c.tenant_id == tenant, kb_chunks.c.document_id == doc_id
            )
        )
        if chunks:
            await self._insert_chunks(conn, document, chunks)
        await conn.execute(
            update(kb_documents)
            .where(kb_documents.c.tenant_id == tenant, kb_documents.c.id == doc_id)
            .values(
                index_state=IndexState.INDEXED.value,
                indexed_digest=digest,
                index_chunks=len(chunks),
                index_generation=kb_documents.c.index_generation + 1,
                index_error=None,
                index_updated_at_ms=now_ms,
            )
        )
        status = await self._status_row(conn, tenant, doc_id)
        assert status is not None
        return status

    async def mark_failed(
        self, tenant_id: TenantId, document_id: str, digest: str, error: str, *, now_ms: int
    ) -> None:
        async with self._db.begin(TenantScope(tenant_id)) as conn:
            await conn.execute(
                update(kb_documents)
                .where(
                    kb_documents.c.tenant_id == tenant_id,
                    kb_documents.c.id == document_id,
                    kb_documents.c.digest == digest,
                    or_(
                        kb_documents.c.indexed_digest.is_(None),
                        kb_documents.c.indexed_digest != digest,
                    ),
                )
                .values(
                    index_state=IndexState.FAILED.value,
                    index_error=error[:2000],
                    index_updated_at_ms=now_ms,
                )
            )

    async def status(self, tenant_id: TenantId, document_id: str) -> IndexStatus | None:
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            return await self._status_row(conn, tenant_id, document_id)

    async def _status_row(
        self, conn: AsyncConnection, tenant: TenantId, doc_id: str, *, lock: bool = False
    ) -> IndexStatus | None:
        c = kb_documents.c
        stmt = select(
            c.digest,
            c.index_state,
            c.indexed_digest,
            c.index_chunks,
            c.index_generation,
            c.index_error,
            c.index_updated_at_ms,
        ).where(c.tenant_id == tenant, c.id == doc_id)
        if lock and self._db.is_postgres:
            stmt = stmt.with_for_update()
        r = (await conn.execute(stmt)).first()
        if r is None:
            return None
        return IndexStatus(
            state=IndexState(r.index_state),
            digest=r.digest,
            indexed_digest=r.indexed_digest,
            chunks=int(r.index_chunks),
            generation=int(r.index_generation),
            error=r.index_error,
            updated_at_ms=int(r.index_updated_at_ms),
        )

    async def _insert_chunks(
        self, conn: AsyncConnection, document: KbDocument, chunks: Sequence[Chunk]
    ) -> None:
        await conn.execute(
            insert(kb_chunks),
            [
                {
                    "tenant_id": document.tenant_id,
                    "document_id": document.id,
                    "ordinal": c.ordinal,
                    "text": c.text,
                }
                for c in chunks
            ],
        )

    async def _unindex(self, conn: AsyncConnection, tenant: TenantId, doc_id: str) -> None:
        return None

    async def set_vectors(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        model: str,
        vectors: Sequence[tuple[int, bytes]],
    ) -> bool:
        async with self._db.begin(TenantScope(tenant_id)) as conn:
            status = await self._status_row(conn, tenant_id, document_id, lock=True)
            if status is None or status.indexed_digest != digest:
                return False
            c = kb_chunks.c
            for ordinal, vector in vectors:
                await conn.execute(
                    update(kb_chunks)
                    .where(
                        c.tenant_id == tenant_id,
                        c.document_id == document_id,
                        c.ordinal == ordinal,
                    )
                    .values(embedding=vector, embedding_model=model)
                )
            return True

    async def has_vectors(
        self, tenant_id: TenantId, document_id: str, digest: str, model: str
    ) -> bool:
        c = kb_chunks.c
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            status = await self._status_row(conn, tenant_id, document_id)
            if status is None or status.indexed_digest != digest:
                return False
            missing = (
                await conn.execute(
                    select(func.count())
                    .select_from(kb_chunks)
                    .where(
                        c.tenant_id == tenant_id,
                        c.document_id == document_id,
                        or_(c.embedding_model.is_(None), c.embedding_model != model),
                    )
                )
            ).scalar_one()
        return int(missing) == 0

    async def nearest(
        self, tenant_id: TenantId, model: str, query: bytes, *, limit: int
    ) -> list[SearchHit]:
        c, d = kb_chunks.c, kb_documents.c
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            rows = (
                await conn.execute(
                    select(c.document_id, c.ordinal, c.embedding).where(
                        c.tenant_id == tenant_id, c.embedding_model == model
                    )
                )
            ).all()
            if not rows or limit <= 0:
                return []
            ranked = await _rank(rows, query, limit)
            keys = [(r.document_id, int(r.ordinal)) for _, r in ranked]
            found = {
                (r.document_id, int(r.ordinal)): r
                for r in await conn.execute(
                    select(c.document_id, c.ordinal, c.text, d.title, d.source)
                    .join(
                        kb_documents,
                        (d.tenant_id == c.tenant_id) & (d.id == c.document_id),
                    )
                    .where(
                        c.tenant_id == tenant_id,
                        or_(
                            *(
                                (c.document_id == doc) & (c.ordinal == ordinal)
                                for doc, ordinal in keys
                            )
                        ),
                    )
                )
            }
        hits = []
        for score, r in ranked:
            row = found.get((r.document_id, int(r.ordinal)))
            if row is not None:
                hits.append(
                    SearchHit(
                        document_id=row.document_id,
                        title=row.title,
                        source=row.source,
                        ordinal=int(row.ordinal),
                        snippet=_vector_snippet(row.text),
                        score=score,
                    )
                )
        return hits

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None:
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            r = (
                await conn.execute(
                    select(kb_documents).where(
                        kb_documents.c.tenant_id == tenant_id, kb_documents.c.id == document_id
                    )
                )
            ).first()
        return None if r is None else _document(r)

    async def list_documents(
        self,
        tenant_id: TenantId,
        *,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[KbDocument]:
        title = func.lower(kb_documents.c.title)
        query = (
            select(kb_documents)
            .where(kb_documents.c.tenant_id == tenant_id)
            .order_by(title, kb_documents.c.id)
        )
        if after is not None:
            last = func.lower(literal(after[0], String))
            query = query.where(
                or_(title > last, and_(title == last, kb_documents.c.id > after[1]))
            )
        if limit is not None:
            query = query.limit(limit)
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            return [_document(r) for r in await conn.execute(query)]

    async def delete(
        self,
        tenant_id: TenantId,
        document_id: str,
        *,
        audit: AuditEvent | None = None,
        at_ms: int = 0,
    ) -> bool:
        scope = TenantScope(tenant_id)
        async with self._db.begin(scope) as conn:
            await self._unindex(conn, tenant_id, document_id)
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
            if result.rowcount and audit is not None:
                await self._trail(conn, scope).append(tenant_id, audit, at_ms=at_ms)
            return bool(result.rowcount)

    async def chunk_count(self, tenant_id: TenantId, document_id: str) -> int:
        async with self._db.connect(TenantScope(tenant_id)) as conn:
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

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        terms = search_terms(query)
        if not terms:
            return []
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            rows = await self._search(conn, tenant_id, terms, limit)
        return [
            SearchHit(
                document_id=r.document_id,
                title=r.title,
                source=r.source,
                ordinal=int(r.ordinal),
                snippet=r.snippet,
                score=float(r.score),
            )
            for r in rows
        ]

    @abstractmethod
    async def _search(
        self, conn: AsyncConnection, tenant: TenantId, terms: list[str], limit: int
    ) -> Sequence[Any]:
        """The top ``limit`` chunks matching any of ``terms``: rows with document_id, ordinal,
        title, source, snippet and score, best first."""


_FTS5_SEARCH = text(
    "SELECT f.document_id, f.ordinal, f.title, d.source, f.snippet, -f.rank AS score FROM ("
    "SELECT document_id, ordinal, title, "
    "snippet(kb_chunks_fts, 1, '', '', '…', 48) AS snippet, bm25(kb_chunks_fts, 2.0, 1.0) AS rank "
    "FROM kb_chunks_fts WHERE kb_chunks_fts MATCH :match AND tenant_id = :tenant "
    "ORDER BY rank, document_id, ordinal LIMIT :limit) AS f "
    "JOIN kb_documents d ON d.tenant_id = :tenant AND d.id = f.document_id "
    "ORDER BY f.rank, f.document_id, f.ordinal"
)
_FTS5_DELETE = text("DELETE FROM kb_chunks_fts WHERE tenant_id = :tenant AND document_id = :doc")
_FTS5_INSERT = text(
    "INSERT INTO kb_chunks_fts (title, text, tenant_id, document_id, ordinal) "
    "VALUES (:title, :text, :tenant, :doc, :ordinal)"
)


def fts_match(terms: list[str]) -> str:
    # Each term quoted (so no FTS5 operator can be injected) and prefix-matched, any of them.
    return " OR ".join('"' + t.replace('"', '""') + '"*' for t in terms)


class SqliteKnowledgeStore(_SqlKnowledgeStore):
    """SQLite: an FTS5 table beside the chunks (unicode61 tokens, bm25 with the title weighted
    double)."""

    async def _insert_chunks(
        self, conn: AsyncConnection, document: KbDocument, chunks: Sequence[Chunk]
    ) -> None:
        await super()._insert_chunks(conn, document, chunks)
        await conn.execute(
            _FTS5_INSERT,
            [
                {
                    "title": document.title,
                    "text": c.text,
                    "tenant": document.tenant_id,
                    "doc": document.id,
                    "ordinal": c.ordinal,
                }
                for c in chunks
            ],
        )

    async def _unindex(self, conn: AsyncConnection, tenant: TenantId, doc_id: str) -> None:
        await conn.execute(_FTS5_DELETE, {"tenant": tenant, "doc": doc_id})

    async def _search(
        self, conn: AsyncConnection, tenant: TenantId, terms: list[str], limit: int
    ) -> Sequence[Any]:
        params = {"match": fts_match(terms), "tenant": tenant, "limit": limit}
        return (await conn.execute(_FTS5_SEARCH, params)).all()


# The chunk's own columns ``title`` and ``language`` feed its generated ``tsv``; the language is
# the tenant's text-search configuration when the chunk was written.
_PG_INSERT = text(
    "INSERT INTO kb_chunks (tenant_id, document_id, ordinal, text, title, language) "
    "SELECT t.id, :doc, :ordinal, :text, :title, t.kb_language::regconfig "
    "FROM tenants t WHERE t.id = :tenant"
)
# The query lives in the schema (``sba_kb_search``, migration 0017), which the asyncpg store
# calls alone; here it runs inside the scoped transaction, whose role and tenant are set already.
_PG_SEARCH = text(
    "SELECT r_document_id AS document_id, r_ordinal AS ordinal, r_title AS title, "
    "r_source AS source, r_score AS score, r_snippet AS snippet "
    "FROM sba_kb_search(:tenant, NULL, :query, :limit)"
)


def tsquery(terms: list[str]) -> str:
    # Terms are words (``\w+``); each is quoted anyway, so no tsquery operator can be injected,
    # and prefix-matched, any of them.
    return " | ".join("'" + t.replace("'", "''").replace("\\", "\\\\") + "':*" for t in terms)


class PostgresKnowledgeStore(_SqlKnowledgeStore):
    """Postgres: each chunk row carries a generated ``tsvector`` (title weighted A, text B) in
    the tenant's configuration, under a GIN index; ranked with ``ts_rank_cd``."""

    async def _insert_chunks(
        self, conn: AsyncConnection, document: KbDocument, chunks: Sequence[Chunk]
    ) -> None:
        await conn.execute(
            _PG_INSERT,
            [
                {
                    "tenant": document.tenant_id,
                    "doc": document.id,
                    "ordinal": c.ordinal,
                    "text": c.text,
                    "title": document.title,
                }
                for c in chunks
            ],
        )

    async def _search(
        self, conn: AsyncConnection, tenant: TenantId, terms: list[str], limit: int
    ) -> Sequence[Any]:
        params = {"query": tsquery(terms), "tenant": tenant, "limit": limit}
        return (await conn.execute(_PG_SEARCH, params)).all()
