"""ChunkVectors contract on the in-memory store, SQLite and Postgres: vectors belong to the
indexed version of a document, per model, ranked by cosine, never across tenants."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.knowledge import MemoryKnowledgeStore
from adapters.sqla.knowledge import PostgresKnowledgeStore, SqliteKnowledgeStore
from domain.knowledge.model import Chunk
from domain.knowledge.vectors import pack
from tests.contract.test_knowledge_contract import A, B, doc
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request, tmp_path) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryKnowledgeStore()
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield PostgresKnowledgeStore(db) if db.is_postgres else SqliteKnowledgeStore(db)


M = "test-embed@3"


def vec(*xs: float) -> bytes:
    return pack(list(xs))


async def indexed(store, id: str, texts: list[str], tenant=A, title: str | None = None):
    d = doc(id, title or id.title(), "\n\n".join(texts), tenant)
    await store.save(d)
    chunks = [Chunk(ordinal=i, text=t) for i, t in enumerate(texts)]
    await store.index(tenant, id, d.digest(), chunks, now_ms=5)
    return d


async def test_vectors_rank_chunks_by_cosine_with_their_text_and_document(store) -> None:
    a = await indexed(store, "a", ["sunny beach holidays", "tax forms"], title="Leave")
    b = await indexed(store, "b", ["invoice numbers"], title="Billing")
    assert await store.set_vectors(A, "a", a.digest(), M, [(0, vec(1, 0, 0)), (1, vec(0, 1, 0))])
    assert await store.set_vectors(A, "b", b.digest(), M, [(0, vec(0.6, 0.8, 0))])
    hits = await store.nearest(A, M, vec(1, 0.1, 0), limit=10)
    assert [(h.document_id, h.ordinal) for h in hits] == [("a", 0), ("b", 0), ("a", 1)]
    assert hits[0].title == "Leave" and hits[0].source == "kb://a"
    assert hits[0].snippet == "sunny beach holidays"
    assert hits[0].score == pytest.approx(1 / (1.01**0.5), rel=1e-5)
    assert hits[0].score > hits[1].score > hits[2].score
    assert [h.ordinal for h in await store.nearest(A, M, vec(0, 1, 0), limit=1)] == [1]


async def test_has_vectors_only_when_every_chunk_of_the_indexed_version_has_one(store) -> None:
    a = await indexed(store, "a", ["one", "two"])
    assert not await store.has_vectors(A, "a", a.digest(), M)
    await store.set_vectors(A, "a", a.digest(), M, [(0, vec(1, 0))])
    assert not await store.has_vectors(A, "a", a.digest(), M)
    await store.set_vectors(A, "a", a.digest(), M, [(1, vec(0, 1))])
    assert await store.has_vectors(A, "a", a.digest(), M)
    assert not await store.has_vectors(A, "a", a.digest(), "other-model")
    assert not await store.has_vectors(A, "a", "0" * 32, M)
    assert not await store.has_vectors(A, "missing", a.digest(), M)


async def test_vectors_for_a_version_not_indexed_are_refused_and_reindexing_drops_them(
    store,
) -> None:
    a = await indexed(store, "a", ["old text"])
    assert await store.set_vectors(A, "a", a.digest(), M, [(0, vec(1, 0))])
    newer = doc("a", "A", "new text")
    await store.save(newer)  # saved, not yet indexed: the old chunks and vectors stay
    assert not await store.set_vectors(A, "a", newer.digest(), M, [(0, vec(0, 1))])
    assert [h.snippet for h in await store.nearest(A, M, vec(1, 0), limit=5)] == ["old text"]
    await store.index(A, "a", newer.digest(), [Chunk(ordinal=0, text="new text")], now_ms=9)
    assert await store.nearest(A, M, vec(1, 0), limit=5) == []
    assert not await store.has_vectors(A, "a", newer.digest(), M)


async def test_nearest_never_crosses_tenants_or_models(store) -> None:
    a = await indexed(store, "same", ["a's secret"], A)
    b = await indexed(store, "same", ["b's secret"], B)
    await store.set_vectors(A, "same", a.digest(), M, [(0, vec(1, 0))])
    await store.set_vectors(B, "same", b.digest(), M, [(0, vec(1, 0))])
    # A vector can only be set for the tenant that owns the document version.
    assert not await store.set_vectors(B, "same", a.digest(), M, [(0, vec(0, 1))])
    assert [h.snippet for h in await store.nearest(A, M, vec(1, 0), limit=5)] == ["a's secret"]
    assert [h.snippet for h in await store.nearest(B, M, vec(1, 0), limit=5)] == ["b's secret"]
    assert await store.nearest(A, "other-model", vec(1, 0), limit=5) == []


async def test_a_deleted_document_leaves_no_vectors(store) -> None:
    a = await indexed(store, "a", ["gone soon"])
    await store.set_vectors(A, "a", a.digest(), M, [(0, vec(1, 0))])
    assert await store.delete(A, "a")
    assert await store.nearest(A, M, vec(1, 0), limit=5) == []
