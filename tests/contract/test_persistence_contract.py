"""UnitOfWork and repository contract, run on the in-memory store and SQLite."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from adapters.sqla.migrator import AlembicSchemaMigrator
from application.errors import Conflict
from application.ports import UnitOfWork
from domain.conversation.model import Message, Role, Run, RunStatus, Thread, Usage
from domain.ids import ApiKeyId, MessageId, RunId, TenantId, ThreadId
from domain.tenancy.model import Role as KeyRole
from domain.tenancy.model import Tenant, TenantStatus, mint_api_key
from tests.pg import ADMIN_DSN, _url, drop_database

A, B = TenantId("ten_a"), TenantId("ten_b")


async def add_tenants(uow: UnitOfWork) -> None:
    async with uow.transaction(None) as tx:
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
    async with uow.transaction(None) as tx:
        for tenant, text in ((A, "a"), (B, "b")):
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
        async with uow.transaction(None) as tx:
            await tx.tenants.add(
                Tenant(id=TenantId("ten_c"), slug="alpha", name="x", created_at_ms=1)
            )
            await tx.commit()


async def test_tenants_are_found_by_id_and_slug_and_listed(uow: UnitOfWork) -> None:
    await add_tenants(uow)
    async with uow.transaction(None) as tx:
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
    async with uow.transaction(None) as tx:
        await tx.api_keys.add(issued.key)
        await tx.commit()
    async with uow.transaction(None) as tx:
        found = await tx.api_keys.get_by_prefix(issued.key.prefix)
        assert await tx.api_keys.get_by_prefix("0" * 12) is None
    assert found == issued.key
    secret = issued.plaintext.split("_", 2)[2]
    assert found.matches(secret)
    assert secret not in found.secret_digest


async def walk_the_stairs(migrator) -> None:
    await migrator.upgrade()
    assert await migrator.current() == "0004"
    assert await migrator.check() == []
    await migrator.downgrade("0003")
    assert "add_table: interrupts" in await migrator.check()
    for revision, expected in (("0002", "0002"), ("0001", "0001"), ("base", None)):
        await migrator.downgrade(revision)
        assert await migrator.current() == expected
    await migrator.upgrade()
    assert await migrator.current() == "0004"
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
