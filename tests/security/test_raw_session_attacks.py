"""The second wall on its own: raw SQL as the application role, with the wrong tenant's context
or none, against every tenant table. Tenant A's rows and tenant B's rows share the same ids
(drawn by hypothesis), so a policy that compared anything but the tenant would show. Zero rows
leak, nothing of A's changes, and a missing context reads and writes nothing."""

from __future__ import annotations

import asyncio
import string
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.journal import TransactionalRunJournal
from adapters.scope import TenantScope
from adapters.sqla.interrupts import SqlaInterruptStore
from adapters.sqla.jobs import SqlaRenderJobRepository
from adapters.sqla.knowledge import PostgresKnowledgeStore
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.scope import Database
from adapters.sqla.tables import TENANT_TABLES
from adapters.sqla.tasks import SqlaTaskRepository
from adapters.sqla.threads import SqlaThreadCatalog
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from domain.audit.events import render_requested, task_created
from domain.conversation.interrupts import Interrupt
from domain.conversation.model import Message, Role, Run, Thread, Usage
from domain.ids import ApiKeyId, MessageId, RunId, TenantId, ThreadId
from domain.knowledge.model import KbDocument
from domain.knowledge.text import ContentType
from domain.render.model import RenderJob
from domain.tenancy.model import Role as KeyRole
from domain.tenancy.model import Tenant, mint_api_key
from domain.tools.model import Task
from tests.pg import _run, drop_database, fresh_database

TABLES = {"tenants": "id", **dict.fromkeys(TENANT_TABLES, "tenant_id")}

# A row for tenant :t in each table, with fresh ids (:n); for the FK tables, the parent named
# by :parent. Each must be refused when :t is not the transaction's tenant.
INSERTS = {
    "tenants": "INSERT INTO tenants (id, slug, name, status, created_at_ms, kb_language) "
    "VALUES (:t, 'evil-' || CAST(:n AS text), 'evil', 'active', 0, 'simple')",
    "api_keys": "INSERT INTO api_keys (id, tenant_id, prefix, secret_digest, role, revoked, "
    "created_at_ms) VALUES (:n, :t, :p, 'x', 'admin', false, 0)",
    "threads": "INSERT INTO threads (tenant_id, id, created_at_ms) VALUES (:t, :n, 0)",
    "messages": "INSERT INTO messages (tenant_id, thread_id, id, position, role, content, "
    "created_at_ms) VALUES (:t, :parent, :n, 999, 'user', 'evil', 0)",
    "runs": "INSERT INTO runs (tenant_id, id, thread_id, agent, status, input_tokens, "
    "output_tokens, created_at_ms) VALUES (:t, :n, :parent, 'a', 'pending', 0, 0, 0)",
    "kb_documents": "INSERT INTO kb_documents (tenant_id, id, title, content_type, content, "
    "source, metadata, created_at_ms, updated_at_ms) "
    "VALUES (:t, :n, 'evil', 'markdown', 'evil', 'x', '{}', 0, 0)",
    "kb_chunks": "INSERT INTO kb_chunks (tenant_id, document_id, ordinal, text) "
    "VALUES (:t, :doc, 999, 'evil')",
    "tasks": "INSERT INTO tasks (tenant_id, id, title, notes, status, created_by, created_at_ms) "
    "VALUES (:t, :n, 'evil', '', 'open', 'x', 0)",
    "interrupts": "INSERT INTO interrupts (tenant_id, id, thread_id, run_id, tool_call_id, "
    "tool_name, arguments, reason, message, expires_at_ms, status) "
    "VALUES (:t, :n, 'x', 'x', 'x', 'x', '{}', 'x', 'x', 0, 'pending')",
    "render_jobs": "INSERT INTO render_jobs (tenant_id, id, template, data, formats, "
    "requested_by, state, attempts, artifacts, created_at_ms, updated_at_ms) "
    "VALUES (:t, :n, 'inline:x', '{}', 'markdown', 'x', 'queued', 0, '{}', 0, 0)",
    "audit_entries": "INSERT INTO audit_entries (tenant_id, seq, at_ms, actor, action, "
    "subject, details, prev_hash, hash) VALUES (:t, 900000 + length(:n), 0, 'evil', 'x', "
    "'x', '{}', 'x', 'x')",
    "audit_heads": "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (:t, 0, 'x')",
    "deleted_run_usage": "INSERT INTO deleted_run_usage (tenant_id, run_id, created_at_ms, "
    "model, input_tokens, output_tokens) VALUES (:t, :n, 0, 'x', 0, 0)",
}
# The audit trail is append-only for the application role: no UPDATE or DELETE of entries,
# no DELETE of heads, not even of its own tenant's.
APPEND_ONLY = {
    "audit_entries": ("UPDATE", "DELETE"),
    "audit_heads": ("DELETE",),
    # Usage once counted stays counted.
    "deleted_run_usage": ("UPDATE", "DELETE"),
}
# Rows of B pointing at rows only A has: the composite foreign keys refuse them.
REFERENCES = ("messages", "runs", "kb_chunks")

ids = st.text(
    alphabet=string.ascii_letters + string.digits + "-_:. ", min_size=1, max_size=40
).filter(lambda s: not s.isspace())  # an id of blanks only is refused by the domain


@pytest.fixture(scope="module")
def pg_url(pg_template):
    made: dict[str, str] = {}

    async def create() -> None:
        made["url"], made["name"] = await fresh_database(pg_template)

    _run(create)
    yield made["url"]
    _run(lambda: drop_database(made["name"]))


async def seed(db: Database, tenant: TenantId, ids: Mapping[str, str], *, only_a: bool) -> None:
    """One row in every table for ``tenant``, through the application's own adapters."""
    uow = SqlaUnitOfWork(db)
    async with uow.admin_transaction("test", "seed") as tx:
        await tx.tenants.add(
            Tenant(id=tenant, slug=f"t-{uuid.uuid4().hex[:12]}", name="t", created_at_ms=0)
        )
        await tx.commit()
    thread, run_id = ThreadId(ids["thread"]), RunId(ids["run"])
    await TransactionalRunJournal(uow).record_start(
        Run(id=run_id, tenant_id=tenant, thread_id=thread, agent="assistant", created_at_ms=1),
        [Message(id=MessageId(ids["message"]), role=Role.USER, content="hi", created_at_ms=1)],
    )
    async with uow.transaction(tenant) as tx:
        key = mint_api_key(
            key_id=ApiKeyId(f"key_{uuid.uuid4().hex}"),
            tenant_id=tenant,
            role=KeyRole.ADMIN,
            created_at_ms=1,
        )
        await tx.api_keys.add(key.key)
        if only_a:  # a thread B does not have, for the reference attacks
            await tx.threads.add(
                Thread(id=ThreadId(ids["a_only"]), tenant_id=tenant, created_at_ms=1)
            )
        await tx.commit()
    docs = [ids["doc"], *([ids["a_only"]] if only_a else [])]
    for doc_id in docs:
        d = KbDocument(
            id=doc_id,
            tenant_id=tenant,
            title="Secret plan",
            content=f"The secret of {tenant} is kept here.",
            content_type=ContentType.MARKDOWN,
            source="kb://x",
            metadata={},
            created_at_ms=1,
            updated_at_ms=1,
        )
        await PostgresKnowledgeStore(db).put(d, d.chunks(max_chars=200, overlap=20))
    task = Task(id=ids["task"], tenant_id=tenant, title="secret")
    await SqlaTaskRepository(db).add(task, audit=task_created(task, actor="agent:assistant"))
    await SqlaInterruptStore(db).add(
        [
            Interrupt(
                id=ids["interrupt"],
                tenant_id=tenant,
                thread_id=thread,
                run_id=run_id,
                tool_call_id="c",
                tool_name="create_task",
                arguments="{}",
                reason="tool_approval",
                message="approve?",
                expires_at_ms=10**15,
            )
        ],
        actor="agent:assistant",
        at_ms=1,
    )
    # A deleted thread whose run's usage stays counted.
    gone = Run(
        id=RunId(f"gone-{ids['run']}"),
        tenant_id=tenant,
        thread_id=ThreadId(f"gone-{ids['thread']}"),
        agent="assistant",
        created_at_ms=1,
    )
    await TransactionalRunJournal(uow).record_start(gone, [])
    gone.start()
    gone.succeed(usage=Usage(input_tokens=3, output_tokens=4), at_ms=2)
    await TransactionalRunJournal(uow).record_end(gone, [])
    removed = await SqlaThreadCatalog(db).delete(tenant, gone.thread_id, actor="key:k", at_ms=3)
    assert removed is not None
    render = RenderJob(id=f"r{ids['render']}", tenant_id=tenant, template="inline:secret")
    await SqlaRenderJobRepository(db).add(render, audit=render_requested(render, actor="key:k"))


async def snapshot(engine: AsyncEngine, tenant: TenantId) -> dict[str, list[tuple[Any, ...]]]:
    """Everything of ``tenant``, read as the superuser (no row-level security)."""
    out = {}
    async with engine.connect() as conn:
        for table, column in TABLES.items():
            rows = await conn.execute(
                text(f"SELECT * FROM {table} WHERE {column} = :t"), {"t": tenant}
            )
            out[table] = sorted(tuple(map(str, r)) for r in rows)
    return out


async def as_app(engine: AsyncEngine, tenant: str | None, sql: str, params: dict) -> Any:
    """One statement as the application role, with ``tenant``'s context or none at all."""
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(text("SELECT set_config('role', :r, true)"), {"r": DEFAULT_APP_ROLE})
        if tenant is not None:
            await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        result = await conn.execute(text(sql), params)
        out = result.all() if result.returns_rows else result.rowcount
        await conn.commit()
        return out


async def refused(engine: AsyncEngine, tenant: str | None, sql: str, params: dict) -> str:
    with pytest.raises(DBAPIError) as caught:
        await as_app(engine, tenant, sql, params)
    return caught.value.orig.sqlstate  # type: ignore[union-attr]


async def attack(url: str, names: Mapping[str, str]) -> None:
    engine = create_engine_for(url, pool_size=2, max_overflow=0)
    db = Database(engine, app_role=DEFAULT_APP_ROLE)
    a, b = TenantId(f"ten_a_{uuid.uuid4().hex}"), TenantId(f"ten_b_{uuid.uuid4().hex}")
    try:
        await seed(db, a, names, only_a=True)
        await seed(db, b, names, only_a=False)
        before = await snapshot(engine, a)
        assert all(before[t] for t in TABLES), "every table holds a row of A"
        b_rows = await snapshot(engine, b)
        for table, column in TABLES.items():
            # Read: B sees exactly its own rows; none of A's, by filter or without one.
            seen = await as_app(engine, b, f"SELECT {column} FROM {table}", {})
            assert {r[0] for r in seen} == {b}, table
            assert len(seen) == len(b_rows[table]), table
            assert (
                await as_app(engine, b, f"SELECT 1 FROM {table} WHERE {column} = :a", {"a": a})
                == []
            )
            # Update and delete A's rows: nothing matches (on the append-only audit tables the
            # statement itself is refused, whoever's rows it names).
            update = f"UPDATE {table} SET {column} = {column} WHERE {column} = :a"
            remove = f"DELETE FROM {table} WHERE {column} = :a"
            for statement in (update, remove):
                verb = statement.split()[0]
                if verb in APPEND_ONLY.get(table, ()):
                    assert await refused(engine, b, statement, {"a": a}) == "42501", table
                    assert await refused(engine, b, statement, {"a": b}) == "42501", table
                else:
                    assert await as_app(engine, b, statement, {"a": a}) == 0, table
            # Insert a row for A, or move B's own rows to A: refused by the policy.
            params = {
                "t": a,
                "n": f"n-{uuid.uuid4().hex}",
                "p": uuid.uuid4().hex[:24],
                "parent": names["thread"],
                "doc": names["doc"],
            }
            assert await refused(engine, b, INSERTS[table], params) == "42501", table
            if table != "tenants" and "UPDATE" not in APPEND_ONLY.get(table, ()):
                # (moving a tenant row is its own primary key; audit entries cannot be updated)
                assert (
                    await refused(
                        engine,
                        b,
                        f"UPDATE {table} SET {column} = :a WHERE {column} = :b",
                        {"a": a, "b": b},
                    )
                    == "42501"
                ), table
            # No context at all: nothing to read, nothing to write.
            assert await as_app(engine, None, f"SELECT count(*) FROM {table}", {}) == [(0,)]
            assert await refused(engine, None, INSERTS[table], {**params, "t": b}) == "42501", table
        for table in REFERENCES:
            params = {
                "t": b,
                "n": f"n-{uuid.uuid4().hex}",
                "p": uuid.uuid4().hex[:24],
                "parent": names["a_only"],
                "doc": names["a_only"],
            }
            assert await refused(engine, b, INSERTS[table], params) == "23503", table  # FK
        assert await snapshot(engine, a) == before
    finally:
        await engine.dispose()


@settings(
    max_examples=12,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as drawn, unshrunk
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    names=st.fixed_dictionaries(
        dict.fromkeys(("thread", "run", "message", "doc", "task", "interrupt", "render"), ids)
    ).flatmap(
        lambda d: ids.filter(lambda x: x not in (d["thread"], d["doc"])).map(
            lambda a_only: {**d, "a_only": a_only}
        )
    )
)
def test_a_second_tenant_can_neither_read_nor_change_nor_reference_the_firsts_rows(
    pg_url, names
) -> None:
    asyncio.run(attack(pg_url, names))


async def test_a_pooled_connection_carries_no_role_and_no_context_after_a_transaction(
    pg_url,
) -> None:
    engine = create_engine_for(pg_url, pool_size=1, max_overflow=0)
    db = Database(engine, app_role=DEFAULT_APP_ROLE)
    try:
        for outcome in ("commit", "error"):
            try:
                async with db.connect(TenantScope(TenantId("ten_x"))) as conn:
                    inside = (
                        await conn.execute(
                            text("SELECT current_user, current_setting('app.tenant_id', true)")
                        )
                    ).one()
                    assert tuple(inside) == (DEFAULT_APP_ROLE, "ten_x")
                    if outcome == "error":
                        raise RuntimeError("the request failed")
                    await conn.commit()
            except RuntimeError:
                pass
            async with engine.connect() as conn:  # the same, only pooled connection
                after = (
                    await conn.execute(
                        text("SELECT current_user, current_setting('app.tenant_id', true)")
                    )
                ).one()
            assert after[0] == "postgres"
            assert after[1] in (None, "")
    finally:
        await engine.dispose()
