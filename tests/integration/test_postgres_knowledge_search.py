"""The knowledge search on asyncpg (ADR 0046): one statement per search, run as the application
role in the tenant's row-level-security context, leaving nothing on the connection."""

from __future__ import annotations

import asyncpg
import pytest

from adapters.postgres.knowledge import AsyncpgKnowledgeStore
from adapters.sqla.rls import DEFAULT_APP_ROLE
from domain.ids import TenantId
from domain.knowledge.model import KbDocument
from domain.knowledge.text import ContentType
from tests.db import plain_dsn, sql_database, who_may_execute
from tests.integration.test_postgres_journal import logged, terminate_connections
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


def doc(id: str, tenant: TenantId, content: str) -> KbDocument:
    return KbDocument(
        id=id,
        tenant_id=tenant,
        title=id.title(),
        content=content,
        content_type=ContentType.MARKDOWN,
        source=f"kb://{id}",
        metadata={},
        created_at_ms=1,
        updated_at_ms=2,
    )


async def seeded(store: AsyncpgKnowledgeStore) -> None:
    for d in (
        doc("refunds", A, "Refunds are paid within five business days."),
        doc("secret-refunds", B, "Tenant B refunds its own customers in cash."),
    ):
        await store.put(d, d.chunks(max_chars=200, overlap=20))


async def test_a_search_is_one_statement_that_leaves_nothing_behind(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[A, B]) as db:
        store = AsyncpgKnowledgeStore(db, plain_dsn(db), app_role=DEFAULT_APP_ROLE, connections=1)
        try:
            await seeded(store)
            pool = store._pool
            statements: list[str] = []
            async with pool.acquire() as conn:
                conn.add_query_logger(lambda record: statements.append(record.query))
            hits = await store.search(A, "refunds", limit=5)
            assert [h.document_id for h in hits] == ["refunds"]
            assert hits[0].source == "kb://refunds" and "five business days" in hits[0].snippet
            await logged(statements)
            assert [s for s in statements if "pg_catalog" not in s] == [
                "SELECT * FROM sba_kb_search($1, $2, $3, $4)"
            ]
            # The same connection afterwards: the login role again, and no tenant set.
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_user") != DEFAULT_APP_ROLE
                assert not await conn.fetchval("SELECT current_setting('app.tenant_id', true)")
        finally:
            await store.close()


async def test_the_search_runs_as_the_role_it_is_given_even_for_a_superuser_login(
    request, tmp_path
) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[A, B]) as db:
        store = AsyncpgKnowledgeStore(db, plain_dsn(db), app_role=DEFAULT_APP_ROLE)
        conn = await asyncpg.connect(plain_dsn(db))
        search = "SELECT r_document_id FROM sba_kb_search($1, $2, $3, $4)"
        try:
            await seeded(store)
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            rows = await conn.fetch(search, A, DEFAULT_APP_ROLE, "'refunds':*", 10)
            assert [r[0] for r in rows] == ["refunds"]
            # A role that may read nothing: the search fails, so the policies and grants it
            # runs under are the role's, not the superuser login's.
            await conn.execute("DROP ROLE IF EXISTS sba_reads_nothing")
            await conn.execute("CREATE ROLE sba_reads_nothing NOLOGIN")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(search, A, "sba_reads_nothing", "'refunds':*", 10)
        finally:
            await conn.execute("DROP ROLE IF EXISTS sba_reads_nothing")
            await conn.close()
            await store.close()


async def test_only_the_application_role_may_call_the_search(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[A]) as db:
        assert await who_may_execute(db, "sba_kb_search") == (True, False)


async def test_a_search_survives_connections_the_server_closed(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[A, B]) as db:
        store = AsyncpgKnowledgeStore(db, plain_dsn(db), app_role=DEFAULT_APP_ROLE, connections=1)
        try:
            await seeded(store)
            assert [h.document_id for h in await store.search(A, "refunds", limit=5)]
            assert await terminate_connections(db.engine.url.database) >= 1
            assert [h.document_id for h in await store.search(A, "refunds", limit=5)] == ["refunds"]
        finally:
            await store.close()
