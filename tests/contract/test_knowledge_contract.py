"""KnowledgeStore contract on the in-memory store, SQLite FTS5 and Postgres full-text search
(searching through SQLAlchemy, and through asyncpg's one-call search)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.knowledge import MemoryKnowledgeStore
from adapters.postgres.knowledge import AsyncpgKnowledgeStore
from adapters.sqla.knowledge import PostgresKnowledgeStore, SqliteKnowledgeStore
from adapters.sqla.rls import DEFAULT_APP_ROLE
from application.knowledge.ports import KnowledgeStore
from domain.ids import TenantId
from domain.knowledge.model import KbDocument
from domain.knowledge.text import ContentType
from tests.db import plain_dsn, sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


@pytest.fixture(params=["memory", "sqlite", "postgres", "postgres-asyncpg"])
async def store(request, tmp_path) -> AsyncIterator[KnowledgeStore]:
    if request.param == "memory":
        yield MemoryKnowledgeStore()
        return
    kind = request.param.removesuffix("-asyncpg")
    async with sql_database(kind, request, tmp_path, tenants=(A, B)) as db:
        if request.param == "postgres-asyncpg":
            fast = AsyncpgKnowledgeStore(db, plain_dsn(db), app_role=DEFAULT_APP_ROLE)
            try:
                yield fast
            finally:
                await fast.close()
        else:
            yield PostgresKnowledgeStore(db) if db.is_postgres else SqliteKnowledgeStore(db)


def doc(id: str, title: str, content: str, tenant: TenantId = A, **kw) -> KbDocument:
    return KbDocument(
        id=id,
        tenant_id=tenant,
        title=title,
        content=content,
        content_type=ContentType.MARKDOWN,
        source=kw.get("source", f"kb://{id}"),
        metadata=kw.get("metadata", {}),
        created_at_ms=1,
        updated_at_ms=2,
    )


async def put(store: KnowledgeStore, d: KbDocument) -> None:
    await store.put(d, d.chunks(max_chars=200, overlap=20))


REFUNDS = doc(
    "refunds",
    "Refund policy",
    "Customers may return products within 30 days for a full refund. "
    "Refunds are paid to the original payment method within five business days.",
)
SHIPPING = doc(
    "shipping",
    "Shipping times",
    "Orders ship within two business days. Express shipping arrives next day.",
)


async def test_a_stored_document_round_trips(store: KnowledgeStore) -> None:
    d = doc("d1", "Title", "Body text here.", metadata={"team": "ops"})
    await put(store, d)
    assert await store.get(A, "d1") == d
    assert await store.chunk_count(A, "d1") == 1
    assert [x.id for x in await store.list_documents(A)] == ["d1"]


async def test_search_ranks_the_relevant_document_first_and_stems_words(
    store: KnowledgeStore,
) -> None:
    await put(store, REFUNDS)
    await put(store, SHIPPING)
    hits = await store.search(A, "How do refunds work?", limit=5)
    assert hits and hits[0].document_id == "refunds"
    assert hits[0].title == "Refund policy" and hits[0].source == "kb://refunds"
    assert "refund" in hits[0].snippet.lower()
    shipping = await store.search(A, "express ship", limit=5)
    assert shipping[0].document_id == "shipping"


async def test_nothing_matches_an_unknown_word_or_an_empty_query(store: KnowledgeStore) -> None:
    await put(store, REFUNDS)
    assert await store.search(A, "zygomorphic", limit=5) == []
    assert await store.search(A, "?!", limit=5) == []


async def test_search_never_returns_another_tenants_chunks(store: KnowledgeStore) -> None:
    await put(store, REFUNDS)
    await put(store, doc("b-secret", "Refund secrets", "refund refund refund", tenant=B))
    hits = await store.search(A, "refund", limit=10)
    assert {h.document_id for h in hits} == {"refunds"}
    assert await store.get(B, "refunds") is None
    assert [d.id for d in await store.list_documents(B)] == ["b-secret"]


async def test_query_syntax_cannot_escape_the_search(store: KnowledgeStore) -> None:
    await put(store, REFUNDS)
    for hostile in ['refund" OR tenant_id:*', "refund) OR (1", "NEAR(refund days)", "title:*"]:
        hits = await store.search(A, hostile, limit=5)
        assert all(h.document_id == "refunds" for h in hits)


async def test_putting_the_same_id_replaces_document_and_chunks(store: KnowledgeStore) -> None:
    await put(store, REFUNDS)
    await put(store, doc("refunds", "Refund policy v2", "Store credit only, within 14 days."))
    assert (await store.get(A, "refunds")).title == "Refund policy v2"  # type: ignore[union-attr]
    assert await store.search(A, "original payment method", limit=5) == []
    assert (await store.search(A, "store credit", limit=5))[0].title == "Refund policy v2"


async def test_deleting_removes_the_document_from_search(store: KnowledgeStore) -> None:
    await put(store, REFUNDS)
    assert await store.delete(A, "refunds")
    assert not await store.delete(A, "refunds")
    assert await store.search(A, "refund", limit=5) == []
    assert await store.get(A, "refunds") is None
    assert await store.chunk_count(A, "refunds") == 0


async def test_long_documents_are_searchable_in_every_chunk(store: KnowledgeStore) -> None:
    body = " ".join(f"Paragraph {i} talks about topic{i} in detail." for i in range(60))
    d = doc("long", "Long", body)
    chunks = d.chunks(max_chars=200, overlap=20)
    await store.put(d, chunks)
    assert len(chunks) > 5
    hits = await store.search(A, "topic57", limit=3)
    assert hits and "topic57" in chunks[hits[0].ordinal].text


async def test_documents_list_a_page_at_a_time_in_title_order(store: KnowledgeStore) -> None:
    titles = ["beta", "Alpha", "alpha", "Gamma", "delta", "beta"]
    for n, title in enumerate(titles):
        await put(store, doc(f"d{n}", title, f"Text {n}."))
    await put(store, doc("other", "aardvark", "Not A's.", tenant=B))
    everything = await store.list_documents(A)
    assert [(d.title.lower(), d.id) for d in everything] == sorted(
        (t.lower(), f"d{n}") for n, t in enumerate(titles)
    )
    seen, after = [], None
    while page := await store.list_documents(A, after=after, limit=2):
        assert len(page) <= 2
        seen += page
        after = (page[-1].title, page[-1].id)
    assert [d.id for d in seen] == [d.id for d in everything]
