"""UnitOfWork and repository contract, run on the in-memory store, SQLite and Postgres (where
tenant work runs under row-level security as the application role)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from adapters.sqla.migrator import AlembicSchemaMigrator, alembic_config
from application.errors import Conflict, TenantScopeViolation
from application.ports import UnitOfWork
from domain.conversation.model import Message, Role, Run, RunStatus, Thread, Usage
from domain.ids import ApiKeyId, MessageId, RunId, TenantId, ThreadId
from domain.tenancy.model import Role as KeyRole
from domain.tenancy.model import Tenant, TenantStatus, mint_api_key
from tests.pg import ADMIN_DSN, _url, drop_database

A, B = TenantId("ten_a"), TenantId("ten_b")


async def add_tenants(uow: UnitOfWork) -> None:
    async with uow.admin_transaction("test", "seed") as tx:
        await tx.tenants.add(Tenant(id=A, slug="alpha", name="Alpha", created_at_ms=1))
        await tx.tenants.add(Tenant(id=B, slug="beta", name="Beta", created_at_ms=2))
        await tx.commit()


def thread(tenant: TenantId = A, id: str = "t1") -> Thread:
    return Thread(id=ThreadId(id), tenant_id=tenant, created_at_ms=3)


def run(tenant: TenantId = A, id: str = "r1", thread_id: str = "t1") -> Run:
    return Run(
        id=RunId(id),
        tenant_id=tenant,
        thread_id=ThreadId(thread_id),
        agent="assistant",
        created_at_ms=4,
    )


def msg(id: str, text: str = "hello", role: Role = Role.USER) -> Message:
    return Message(id=MessageId(id), role=role, content=text, created_at_ms=5)


async def test_committed_changes_are_visible_to_later_transactions(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.commit()
    async with uow.transaction(A) as tx:
        assert await tx.threads.get(A, ThreadId("t1")) == thread()


async def test_an_uncommitted_transaction_leaves_no_trace(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.threads.add_messages(A, ThreadId("t1"), [msg("m1")])
    async with uow.transaction(A) as tx:
        assert await tx.threads.get(A, ThreadId("t1")) is None
        assert await tx.threads.list_messages(A, ThreadId("t1")) == []


async def test_an_error_inside_a_transaction_rolls_it_back(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    with pytest.raises(RuntimeError):
        async with uow.transaction(A) as tx:
            await tx.threads.add(thread())
            raise RuntimeError("boom")
    async with uow.transaction(A) as tx:
        assert await tx.threads.get(A, ThreadId("t1")) is None


async def test_second_tenant_cannot_read_first_tenants_thread_messages_or_run(
    uow: UnitOfWork,
) -> None:
    await add_tenants(uow)
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.threads.add_messages(A, ThreadId("t1"), [msg("m1", "secret")])
        await tx.runs.add(run())
        await tx.commit()
    async with uow.transaction(B) as tx:
        assert await tx.threads.get(B, ThreadId("t1")) is None
        assert await tx.threads.list_messages(B, ThreadId("t1")) == []
        assert await tx.runs.get(B, RunId("r1")) is None


async def test_the_same_ids_in_two_tenants_are_two_records(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    for tenant, text in ((A, "a"), (B, "b")):
        async with uow.transaction(tenant) as tx:
            await tx.threads.add(thread(tenant))
            await tx.threads.add_messages(tenant, ThreadId("t1"), [msg("m1", text)])
            await tx.runs.add(run(tenant))
            await tx.commit()
    async with uow.transaction(B) as tx:
        assert [m.content for m in await tx.threads.list_messages(B, ThreadId("t1"))] == ["b"]


async def test_adding_a_run_id_twice_is_a_conflict(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.runs.add(run())
        await tx.commit()
    with pytest.raises(Conflict):
        async with uow.transaction(A) as tx:
            await tx.runs.add(run())
            await tx.commit()


async def test_add_messages_is_idempotent_and_keeps_order(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        assert await tx.threads.add_messages(A, ThreadId("t1"), [msg("a"), msg("b")]) == 2
        assert await tx.threads.add_messages(A, ThreadId("t1"), [msg("a"), msg("c"), msg("b")]) == 1
        await tx.commit()
    async with uow.transaction(A) as tx:
        listed = await tx.threads.list_messages(A, ThreadId("t1"))
    assert [m.id for m in listed] == ["a", "b", "c"]
    assert listed[0] == msg("a")


async def test_run_state_round_trips(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    r = run()
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.runs.add(r)
        await tx.commit()
    r.start()
    r.fail(
        code="model_error", message="down", usage=Usage(input_tokens=3, output_tokens=1), at_ms=99
    )
    async with uow.transaction(A) as tx:
        await tx.runs.save(r)
        await tx.commit()
    async with uow.transaction(A) as tx:
        got = await tx.runs.get(A, RunId("r1"))
    assert got is not None
    assert (got.status, got.usage, got.error_code, got.error_message, got.finished_at_ms) == (
        RunStatus.FAILED,
        Usage(input_tokens=3, output_tokens=1),
        "model_error",
        "down",
        99,
    )
    assert (got.thread_id, got.agent, got.created_at_ms) == ("t1", "assistant", 4)


async def test_a_taken_tenant_slug_is_a_conflict(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    with pytest.raises(Conflict):
        async with uow.admin_transaction("test", "seed") as tx:
            await tx.tenants.add(
                Tenant(id=TenantId("ten_c"), slug="alpha", name="x", created_at_ms=1)
            )
            await tx.commit()


async def test_tenants_are_found_by_id_and_slug_and_listed(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.admin_transaction("test", "seed") as tx:
        by_id = await tx.tenants.get(A)
        by_slug = await tx.tenants.get_by_slug("beta")
        listed = await tx.tenants.list()
        missing = await tx.tenants.get_by_slug("gamma")
    assert by_id is not None and (by_id.slug, by_id.status) == ("alpha", TenantStatus.ACTIVE)
    assert by_slug is not None and by_slug.id == B
    assert [t.slug for t in listed] == ["alpha", "beta"]
    assert missing is None


async def test_api_keys_are_found_by_prefix_and_keep_only_a_digest(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    issued = mint_api_key(
        key_id=ApiKeyId("key_1"), tenant_id=A, role=KeyRole.ADMIN, created_at_ms=7
    )
    async with uow.admin_transaction("test", "seed") as tx:
        await tx.api_keys.add(issued.key)
        await tx.commit()
    async with uow.admin_transaction("test", "seed") as tx:
        found = await tx.api_keys.get_by_prefix(issued.key.prefix)
        assert await tx.api_keys.get_by_prefix("0" * 12) is None
    assert found == issued.key
    secret = issued.plaintext.split("_", 2)[2]
    assert found.matches(secret)
    assert secret not in found.secret_digest


_SCRIPTS = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = _SCRIPTS.get_current_head()
# Newest first: head, …, 0001.
REVISIONS = [r.revision for r in _SCRIPTS.walk_revisions()]


async def walk_the_stairs(migrator) -> None:
    """Up to head; then down one revision at a time to base, and up one at a time again."""
    await migrator.upgrade()
    assert await migrator.current() == HEAD
    assert await migrator.check() == []
    await migrator.downgrade("0003")
    assert "add_table: interrupts" in await migrator.check()
    await migrator.upgrade()
    for below in [*REVISIONS[1:], None]:
        await migrator.downgrade(below or "base")
        assert await migrator.current() == below
    for revision in reversed(REVISIONS):
        await migrator.upgrade(revision)
        assert await migrator.current() == revision
    assert await migrator.current() == HEAD
    assert await migrator.check() == []


async def test_migrations_walk_up_and_down_on_sqlite_and_match_the_models(tmp_path) -> None:
    migrator = AlembicSchemaMigrator(f"sqlite+aiosqlite:///{tmp_path / 'stairs.db'}")
    assert await migrator.current() is None
    await walk_the_stairs(migrator)


async def test_migrations_walk_up_and_down_on_postgres_and_match_the_models(request) -> None:
    request.getfixturevalue("pg_template")  # Postgres is reachable (or the test says why)
    name = f"sba_stairs_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        migrator = AlembicSchemaMigrator(_url(ADMIN_DSN, name))
        assert await migrator.current() is None
        await walk_the_stairs(migrator)
    finally:
        await drop_database(name)


# --- scopes: every adapter holds a transaction to its one tenant -----------------------------


async def seed_both_tenants(uow: UnitOfWork):
    """Tenants A and B with a thread, a run and an API key each; returns the two keys."""
    await add_tenants(uow)
    keys = {}
    for tenant in (A, B):
        issued = mint_api_key(
            key_id=ApiKeyId(f"key_{tenant}"), tenant_id=tenant, role=KeyRole.MEMBER, created_at_ms=1
        )
        keys[tenant] = issued.key
        async with uow.transaction(tenant) as tx:
            await tx.threads.add(thread(tenant))
            await tx.threads.add_messages(tenant, ThreadId("t1"), [msg("m1", f"of {tenant}")])
            await tx.runs.add(run(tenant))
            await tx.api_keys.add(issued.key)
            await tx.commit()
    return keys


@pytest.mark.parametrize(
    "attempt",
    [
        lambda tx: tx.threads.get(B, ThreadId("t1")),
        lambda tx: tx.threads.list_messages(B, ThreadId("t1")),
        lambda tx: tx.threads.add(thread(B, "t9")),
        lambda tx: tx.threads.add_messages(B, ThreadId("t1"), [msg("m9")]),
        lambda tx: tx.runs.get(B, RunId("r1")),
        lambda tx: tx.runs.add(run(B, "r9")),
        lambda tx: tx.runs.save(run(B)),
        lambda tx: tx.tenants.get(B),
        lambda tx: tx.tenants.add(Tenant(id=B, slug="other", name="x", created_at_ms=1)),
    ],
    ids=[
        "thread.get",
        "thread.list_messages",
        "thread.add",
        "thread.add_messages",
        "run.get",
        "run.add",
        "run.save",
        "tenant.get",
        "tenant.add",
    ],
)
async def test_a_tenant_transaction_refuses_to_name_another_tenant(
    uow: UnitOfWork, attempt
) -> None:
    await seed_both_tenants(uow)
    with pytest.raises(TenantScopeViolation):
        async with uow.transaction(A) as tx:
            await attempt(tx)
            await tx.commit()
    async with uow.transaction(B) as tx:  # and nothing of B changed
        assert [m.content for m in await tx.threads.list_messages(B, ThreadId("t1"))] == [
            "of ten_b"
        ]
        assert await tx.threads.get(B, ThreadId("t9")) is None


async def test_a_tenant_transaction_sees_only_its_own_tenant_and_keys(uow: UnitOfWork) -> None:
    keys = await seed_both_tenants(uow)
    async with uow.transaction(A) as tx:
        assert [t.id for t in await tx.tenants.list()] == [A]
        assert await tx.tenants.get_by_slug("beta") is None
        assert (await tx.tenants.get_by_slug("alpha")).id == A  # type: ignore[union-attr]
        assert await tx.api_keys.get_by_prefix(keys[B].prefix) is None
        assert await tx.api_keys.get_by_prefix(keys[A].prefix) == keys[A]
        with pytest.raises(TenantScopeViolation):
            await tx.api_keys.add(
                mint_api_key(
                    key_id=ApiKeyId("key_x"), tenant_id=B, role=KeyRole.ADMIN, created_at_ms=1
                ).key
            )


async def test_a_key_transaction_sees_one_key_and_its_tenant_only(uow: UnitOfWork) -> None:
    keys = await seed_both_tenants(uow)
    async with uow.key_transaction(keys[A].prefix) as tx:
        assert await tx.api_keys.get_by_prefix(keys[A].prefix) == keys[A]
        assert (await tx.tenants.get(A)).slug == "alpha"  # type: ignore[union-attr]
        assert await tx.tenants.get(B) is None
        assert [t.id for t in await tx.tenants.list()] == [A]
        for attempt in (
            lambda: tx.api_keys.get_by_prefix(keys[B].prefix),
            lambda: tx.threads.get(A, ThreadId("t1")),
            lambda: tx.runs.get(A, RunId("r1")),
        ):
            with pytest.raises(TenantScopeViolation):
                await attempt()
    async with uow.key_transaction("0" * 12) as tx:
        assert await tx.api_keys.get_by_prefix("0" * 12) is None
        assert await tx.tenants.list() == []


async def test_every_admin_transaction_is_logged_even_when_it_rolls_back(uow: UnitOfWork) -> None:
    await add_tenants(uow)  # one admin transaction ("test", "seed")
    with pytest.raises(RuntimeError):
        async with uow.admin_transaction("cli:ops", "tenant.list") as tx:
            assert [t.slug for t in await tx.tenants.list()] == ["alpha", "beta"]
            raise RuntimeError("operator aborted")
    async with uow.admin_transaction("cli:ops", "admin.log") as tx:
        entries = await tx.admin_log.recent(10)
    logged = [(e.actor, e.action) for e in entries]
    assert logged[:2] == [("cli:ops", "admin.log"), ("cli:ops", "tenant.list")]
    assert ("test", "seed") in logged[2:]
    assert all(e.at_ms > 0 for e in entries)


async def test_a_store_reports_no_isolation_problems_when_set_up_as_designed(
    uow: UnitOfWork,
) -> None:
    await uow.ping()
    assert await uow.isolation_problems() == []


async def test_messages_list_a_slice_at_a_time_in_order(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    ids = [f"m{n}" for n in range(7)]
    async with uow.transaction(A) as tx:
        await tx.threads.add(thread())
        await tx.threads.add_messages(A, ThreadId("t1"), [msg(i) for i in ids[:4]])
        await tx.threads.add_messages(A, ThreadId("t1"), [msg(i) for i in ids])
        await tx.commit()
    async with uow.transaction(A) as tx:
        pages = [
            [m.id for m in await tx.threads.list_messages(A, ThreadId("t1"), start=s, limit=3)]
            for s in (0, 3, 6, 7)
        ]
    assert pages == [ids[0:3], ids[3:6], ids[6:], []]


async def test_tenants_list_a_page_at_a_time_by_slug(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.admin_transaction("test", "seed") as tx:
        for slug in ("delta", "gamma", "charlie"):
            await tx.tenants.add(
                Tenant(id=TenantId(f"ten_{slug}"), slug=slug, name=slug, created_at_ms=4)
            )
        await tx.commit()
    async with uow.admin_transaction("test", "list") as tx:
        first = [t.slug for t in await tx.tenants.list(limit=2)]
        rest = [t.slug for t in await tx.tenants.list(after=first[-1], limit=10)]
    assert first == ["alpha", "beta"]
    assert rest == ["charlie", "delta", "gamma"]
