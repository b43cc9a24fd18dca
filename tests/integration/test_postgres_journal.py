"""The Postgres run journal and unit of work beyond the journal contract: connections the server
closed are replaced without a ping before every transaction (each recovers on its next use, with
no request failing); a record Postgres refuses fails alone; pooler mode leaves no prepared
statement on the server; once the journal knows a tenant's audit head a flush is one statement,
and a head another instance moved, or a record that does not apply, is found and handled the
careful way with the chain unbroken."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from adapters.postgres.journal import PostgresRunJournal
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.uow import SqlaUnitOfWork
from domain.conversation.model import Message, Role, Run, RunStatus, Usage
from domain.ids import MessageId, RunId, TenantId, ThreadId
from tests.audit_support import verified_trail
from tests.db import plain_dsn, sql_database, who_may_execute
from tests.pg import ADMIN_DSN, pg_template  # noqa: F401 - fixture

T = TenantId("ten_a")


async def terminate_connections(database: str) -> int:
    """Closes every server connection to ``database``, as a restart or failover would."""
    admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await admin.close()


def run(run_id: str) -> Run:
    return Run(
        id=RunId(run_id), tenant_id=T, thread_id=ThreadId("t1"), agent="assistant", created_at_ms=1
    )


def message(mid: str) -> Message:
    return Message(id=MessageId(mid), role=Role.USER, content="hi", created_at_ms=1)


async def test_transactions_after_the_server_closed_the_pool_succeed(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T], pool_size=3) as db:
        uow = SqlaUnitOfWork(db)
        for _ in range(3):
            async with uow.transaction(T) as tx:
                await tx.threads.get(T, ThreadId("t1"))
        assert await terminate_connections(db.engine.url.database) >= 1
        for _ in range(5):
            async with uow.transaction(T) as tx:
                assert await tx.threads.get(T, ThreadId("t1")) is None


async def test_the_run_journal_recovers_from_closed_connections(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        journal = PostgresRunJournal(dsn, app_role=DEFAULT_APP_ROLE)
        try:
            await journal.record_start(run("r1"), [message("m1")])
            assert await terminate_connections(db.engine.url.database) >= 1
            await journal.record_start(run("r2"), [message("m2")])
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                assert await tx.runs.get(T, RunId("r2")) is not None
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert [m.id for m in listed] == ["m1", "m2"]
        finally:
            await journal.close()


async def test_a_record_postgres_cannot_store_fails_alone_naming_no_sql(request, tmp_path) -> None:
    import asyncio

    from application.errors import InvalidInput

    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        journal = PostgresRunJournal(dsn, app_role=DEFAULT_APP_ROLE)
        bad = Message(id=MessageId("m0"), role=Role.USER, content="a\x00b", created_at_ms=1)
        try:
            results = await asyncio.gather(
                *(journal.record_start(run(f"r{i}"), [message(f"m{i}")]) for i in range(1, 6)),
                journal.record_start(run("bad"), [bad]),
                return_exceptions=True,
            )
            assert results[:5] == [None] * 5
            assert isinstance(results[5], InvalidInput)
            text = str(results[5]).lower()
            assert "insert" not in text and "select" not in text and "\x00" not in text
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                assert await tx.runs.get(T, RunId("bad")) is None
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert [m.id for m in listed] == [f"m{i}" for i in range(1, 6)]
        finally:
            await journal.close()


@pytest.mark.parametrize(("pooler", "expect_left"), [(True, False), (False, True)])
async def test_the_journal_in_pooler_mode_leaves_no_prepared_statement_on_the_server(
    request, tmp_path, pooler: bool, expect_left: bool
) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        journal = PostgresRunJournal(dsn, app_role=DEFAULT_APP_ROLE, pooler=pooler, connections=1)
        try:
            for i in range(3):  # repeated statements are what a cache would prepare
                await journal.record_start(run(f"r{i}"), [message(f"m{i}")])
            pool = journal._pool.made
            assert pool is not None
            async with pool.acquire() as conn:
                left = await conn.fetchval(
                    "SELECT count(*) FROM pg_prepared_statements"
                    " WHERE statement NOT LIKE '%pg_prepared_statements%'"
                )
            assert (left > 0) is expect_left
        finally:
            await journal.close()


async def logged_journal(dsn: str) -> tuple[PostgresRunJournal, list[str]]:
    """A journal on one connection whose every statement, from now on, is listed."""
    journal = PostgresRunJournal(dsn, app_role=DEFAULT_APP_ROLE, connections=1)
    statements: list[str] = []
    async with journal._pool.acquire() as conn:
        conn.add_query_logger(lambda record: statements.append(record.query))
    return journal, statements


async def logged(statements: list[str]) -> list[str]:
    """``statements`` once the driver has handed over what it logged: asyncpg gives each record
    to its loggers with ``call_soon``, so they arrive a turn of the event loop after the call."""
    await asyncio.sleep(0)
    return statements


def calls(statements: list[str]) -> list[str]:
    """Statements by what they are: the flush function, or their first word; the driver's own
    type lookups (once per connection, around the first use of a type) left out."""
    return [
        "flush" if "sba_journal_flush" in s else s.split()[0].rstrip(";").lower()
        for s in statements
        if "typeinfo_tree" not in s and "'jit'" not in s
    ]


def finished(run_id: str) -> Run:
    ended = run(run_id)
    ended.start()
    ended.succeed(usage=Usage(input_tokens=3, output_tokens=4), at_ms=9)
    return ended


def answer(mid: str) -> Message:
    return Message(id=MessageId(mid), role=Role.ASSISTANT, content="ok", created_at_ms=2)


async def test_after_a_tenant_s_first_flush_each_flush_is_one_statement(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        journal, statements = await logged_journal(dsn)
        try:
            await journal.record_start(run("r1"), [message("m1")])
            # The first: the journal does not know the tenant's audit head yet.
            assert calls(await logged(statements)) == ["begin", "flush", "with", "commit"]
            statements.clear()
            await journal.record_start(run("r2"), [message("m2")])
            await journal.record_end(finished("r1"), [answer("a1")])
            assert calls(await logged(statements)) == ["flush", "flush"]
            entries = await verified_trail(SqlaUnitOfWork(db), T)
            assert [(e.seq, e.action, e.subject) for e in entries] == [
                (1, "run.started", "r1"),
                (2, "run.started", "r2"),
                (3, "run.finished", "r1"),
            ]
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                stored = await tx.runs.get(T, RunId("r1"))
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert stored is not None and stored.status is RunStatus.SUCCEEDED
            assert stored.usage == Usage(input_tokens=3, output_tokens=4)
            assert [m.id for m in listed] == ["m1", "m2", "a1"]
        finally:
            await journal.close()


async def test_a_head_another_instance_moved_is_found_and_the_chain_holds(
    request, tmp_path
) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        first, said = await logged_journal(dsn)
        second = PostgresRunJournal(dsn, app_role=DEFAULT_APP_ROLE)
        try:
            for i in range(6):  # each writes after the other moved the head
                await (first if i % 2 == 0 else second).record_start(
                    run(f"r{i}"), [message(f"m{i}")]
                )
            # The first journal's later flushes found the head moved, and took the careful way.
            assert (
                calls(said)
                == ["begin", "flush", "with", "commit"]
                + ["flush", "begin", "flush", "with", "commit"] * 2
            )
            entries = await verified_trail(SqlaUnitOfWork(db), T)
            assert [(e.seq, e.subject) for e in entries] == [(i + 1, f"r{i}") for i in range(6)]
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert [m.id for m in listed] == [f"m{i}" for i in range(6)]
        finally:
            await first.close()
            await second.close()


async def test_a_record_the_one_statement_flush_finds_refused_fails_alone(
    request, tmp_path
) -> None:
    import asyncio

    from application.errors import Conflict, NotFound

    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        journal, statements = await logged_journal(dsn)
        try:
            await journal.record_start(run("r1"), [message("m1")])
            await journal.record_end(finished("r1"), [answer("a1")])
            (await logged(statements)).clear()
            results = await asyncio.gather(
                journal.record_start(run("r1"), [message("m9")]),  # taken
                journal.record_end(finished("r1"), [answer("a9")]),  # ended already: stands
                journal.record_end(finished("nope"), []),  # never recorded
                journal.record_start(run("r2"), [message("m2")]),
                return_exceptions=True,
            )
            assert isinstance(results[0], Conflict)
            assert results[1] is None
            assert isinstance(results[2], NotFound)
            assert results[3] is None
            # The first went at once, alone; the three that came meanwhile went together. Each
            # time the one statement rolled back, then the careful way.
            alone = ["flush", "begin", "flush", "commit"]
            together = ["flush", "begin", "flush", "select", "with", "commit"]
            assert calls(await logged(statements)) == [*alone, *together]
            entries = await verified_trail(SqlaUnitOfWork(db), T)
            assert [(e.action, e.subject) for e in entries] == [
                ("run.started", "r1"),
                ("run.finished", "r1"),
                ("run.started", "r2"),
            ]
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert [m.id for m in listed] == ["m1", "a1", "m2"]
        finally:
            await journal.close()


async def test_a_batch_holding_a_run_s_start_and_its_end_applies_both(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        journal, statements = await logged_journal(plain_dsn(db))
        try:
            await journal.record_start(run("r0"), [message("m0")])
            (await logged(statements)).clear()
            # r1's start and its end both wait behind r2's start, and go in one flush.
            await asyncio.gather(
                journal.record_start(run("r2"), [message("m2")]),
                journal.record_start(run("r1"), [message("m1")]),
                journal.record_end(finished("r1"), [answer("a1")]),
            )
            assert calls(await logged(statements)) == ["flush", "flush"]
            entries = await verified_trail(SqlaUnitOfWork(db), T)
            assert [(e.action, e.subject) for e in entries] == [
                ("run.started", "r0"),
                ("run.started", "r2"),
                ("run.started", "r1"),
                ("run.finished", "r1"),
            ]
            async with SqlaUnitOfWork(db).transaction(T) as tx:
                stored = await tx.runs.get(T, RunId("r1"))
                listed = await tx.threads.list_messages(T, ThreadId("t1"))
            assert stored is not None and stored.status is RunStatus.SUCCEEDED
            assert stored.usage == Usage(input_tokens=3, output_tokens=4)
            assert [m.id for m in listed] == ["m0", "m2", "m1", "a1"]
        finally:
            await journal.close()


async def test_a_flush_runs_only_the_statements_its_batch_has_rows_for(request, tmp_path) -> None:
    """An ending's update over an empty batch, planned for its values before the tables have
    statistics, read every run of the tenant; a batch of starts no longer runs it."""
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        journal = PostgresRunJournal(plain_dsn(db), app_role=DEFAULT_APP_ROLE, connections=1)
        planned: list[str] = []
        try:
            async with journal._pool.acquire() as conn:
                # Each statement's plan, the function's own included, as a notice to the client.
                await conn.execute(
                    "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
                    " SET auto_explain.log_nested_statements = on;"
                    " SET auto_explain.log_level = 'notice'"
                )
                conn.add_log_listener(lambda _conn, message: planned.append(str(message)))

            async def statements_of(write: Awaitable[None]) -> list[str]:
                planned.clear()
                await write
                await asyncio.sleep(0)  # the driver hands notices over with call_soon
                return [" ".join(p.split()) for p in planned]

            await journal.record_start(run("r0"), [message("m0")])
            started = await statements_of(journal.record_start(run("r1"), [message("m1")]))
            assert any("INSERT INTO runs" in p for p in started)
            assert not any("UPDATE runs" in p for p in started)
            ended = await statements_of(journal.record_end(finished("r1"), []))
            assert any("UPDATE runs" in p for p in ended)
            assert not any("INSERT INTO runs" in p or "INSERT INTO messages" in p for p in ended)
        finally:
            await journal.close()


async def test_the_flush_plans_per_call_until_the_tables_have_statistics_then_keeps_plans(
    request, tmp_path
) -> None:
    from adapters.postgres.journal import _FLUSH
    from domain.audit.model import GENESIS

    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        dsn = plain_dsn(db)
        conn = await asyncpg.connect(dsn)

        async def planning_after_a_start(run_id: str) -> str:
            ends: list[list[object]] = [[] for _ in range(8)]
            start = [[run_id], ["t1"], ["assistant"], ["pending"], [1]]
            messages = [[run_id], ["t1"], [f"m-{run_id}"], ["user"], ["hi"], [1], [None], [None]]
            async with conn.transaction():
                await conn.fetch(
                    _FLUSH,
                    T,
                    DEFAULT_APP_ROLE,
                    *ends,
                    *start,
                    *messages,
                    GENESIS,
                    None,
                    None,
                    *([[]] * 8),
                )
                return str(await conn.fetchval("SELECT current_setting('plan_cache_mode')"))

        try:
            # A new database: nothing analyzed yet, so a generic plan would be made blind.
            assert await planning_after_a_start("r1") == "force_custom_plan"
            await conn.execute("ANALYZE runs, threads, messages")
            # Statistics: each statement's generic plan, made once per connection and again
            # after the next ANALYZE (migration 0018).
            assert await planning_after_a_start("r2") == "force_generic_plan"
            # Transaction-local: nothing outlives the flush's transaction.
            assert await conn.fetchval("SELECT current_setting('plan_cache_mode')") == "auto"
        finally:
            await conn.close()


async def test_only_the_application_role_may_call_the_flush(request, tmp_path) -> None:
    async with sql_database("postgres", request, tmp_path, tenants=[T]) as db:
        assert await who_may_execute(db, "sba_journal_flush") == (True, False)
