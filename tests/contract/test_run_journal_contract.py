"""RunJournal contract: every adapter records starts and ends the same way."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.postgres.journal import PostgresRunJournal
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.sqlite_journal import SqliteRunJournal
from adapters.sqla.uow import SqlaUnitOfWork
from application.conversation.ports import RunJournal
from application.errors import Conflict, NotFound
from application.ports import UnitOfWork
from domain.conversation.model import Message, Role, Run, RunStatus, ToolCall, Usage
from domain.ids import MessageId, RunId, TenantId, ThreadId
from domain.tenancy.model import Tenant
from domain.tools.model import ToolInvocation, ToolOutcome
from tests.audit_support import verified_trail
from tests.db import plain_dsn, sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


@dataclass
class Subject:
    journal: RunJournal
    uow: UnitOfWork
    # Another journal on the same database, as a second instance of the server has.
    twin: Callable[[], RunJournal]


async def seed_tenants(uow: UnitOfWork) -> None:
    async with uow.admin_transaction("test", "seed") as tx:
        for tid, slug in ((A, "a"), (B, "b")):
            await tx.tenants.add(Tenant(id=tid, slug=slug, name=slug, created_at_ms=0))
        await tx.commit()


async def make_subject(kind: str, request, tmp_path) -> AsyncIterator[Subject]:
    if kind == "memory":
        uow = MemoryUnitOfWork()
        await seed_tenants(uow)
        yield Subject(TransactionalRunJournal(uow), uow, lambda: TransactionalRunJournal(uow))
        return
    async with sql_database(kind, request, tmp_path) as db:
        uow = SqlaUnitOfWork(db)
        await seed_tenants(uow)
        made: list[Any] = []

        def journal() -> Any:
            if kind == "sqlite-writer":
                made.append(SqliteRunJournal(str(tmp_path / "contract.db")))
            elif kind == "postgres-writer":
                made.append(PostgresRunJournal(plain_dsn(db), app_role=DEFAULT_APP_ROLE))
            else:
                made.append(TransactionalRunJournal(uow))
            return made[-1]

        try:
            yield Subject(journal(), uow, journal)
        finally:
            for j in made:
                if isinstance(j, SqliteRunJournal):
                    j.close()
                elif isinstance(j, PostgresRunJournal):
                    await j.close()


# The journals each configuration runs: the transactional one serves memory and an in-memory
# SQLite database; files and Postgres have their group-committing writers.
KINDS = ["memory", "sqlite-transactional", "sqlite-writer", "postgres-writer"]


@pytest.fixture(params=KINDS)
async def subject(request, tmp_path) -> AsyncIterator[Subject]:
    async for s in make_subject(request.param, request, tmp_path):
        yield s


def new_run(run_id: str = "r1", tenant: TenantId = A, thread: str = "t1") -> Run:
    return Run(
        id=RunId(run_id),
        tenant_id=tenant,
        thread_id=ThreadId(thread),
        agent="assistant",
        created_at_ms=5,
    )


def msg(id: str, text: str = "x", role: Role = Role.USER) -> Message:
    return Message(id=MessageId(id), role=role, content=text, created_at_ms=1)


async def stored(uow: UnitOfWork, tenant: TenantId = A, run_id: str = "r1", thread: str = "t1"):
    async with uow.transaction(tenant) as tx:
        return (
            await tx.runs.get(tenant, RunId(run_id)),
            await tx.threads.get(tenant, ThreadId(thread)),
            [m.id for m in await tx.threads.list_messages(tenant, ThreadId(thread))],
        )


async def test_a_recorded_start_creates_thread_messages_and_run(subject: Subject) -> None:
    await subject.journal.record_start(new_run(), [msg("u1"), msg("u2")])
    run, thread, messages = await stored(subject.uow)
    assert run is not None and run.status is RunStatus.PENDING
    assert thread is not None
    assert messages == ["u1", "u2"]


async def test_a_second_run_on_the_thread_adds_only_new_messages(subject: Subject) -> None:
    await subject.journal.record_start(new_run("r1"), [msg("u1")])
    await subject.journal.record_start(new_run("r2"), [msg("u1"), msg("u2")])
    assert (await stored(subject.uow))[2] == ["u1", "u2"]


async def test_a_taken_run_id_is_a_conflict_and_changes_nothing(subject: Subject) -> None:
    await subject.journal.record_start(new_run("r1"), [msg("u1")])
    with pytest.raises(Conflict):
        await subject.journal.record_start(new_run("r1"), [msg("u1"), msg("u9")])
    assert (await stored(subject.uow))[2] == ["u1"]


async def test_the_same_ids_in_another_tenant_are_separate(subject: Subject) -> None:
    await subject.journal.record_start(new_run("r1", A), [msg("u1", "secret")])
    await subject.journal.record_start(new_run("r1", B), [msg("u1", "other")])
    async with subject.uow.transaction(B) as tx:
        contents = [m.content for m in await tx.threads.list_messages(B, ThreadId("t1"))]
    assert contents == ["other"]


async def test_a_recorded_end_stores_outcome_and_reply(subject: Subject) -> None:
    run = new_run()
    await subject.journal.record_start(run, [msg("u1")])
    run.start()
    run.succeed(usage=Usage(input_tokens=2, output_tokens=7), at_ms=9)
    await subject.journal.record_end(run, [msg("a1", "answer", Role.ASSISTANT)])
    got, _, messages = await stored(subject.uow)
    assert got is not None
    assert (got.status, got.usage, got.finished_at_ms) == (
        RunStatus.SUCCEEDED,
        Usage(input_tokens=2, output_tokens=7),
        9,
    )
    assert messages == ["u1", "a1"]


async def test_the_first_ending_stands(subject: Subject) -> None:
    run = new_run()
    await subject.journal.record_start(run, [msg("u1")])
    run.start()
    cancelled = Run(
        id=run.id,
        tenant_id=A,
        thread_id=run.thread_id,
        agent="assistant",
        created_at_ms=5,
        status=RunStatus.RUNNING,
    )
    cancelled.cancel(at_ms=8)
    await subject.journal.record_end(cancelled, [])
    run.succeed(usage=Usage(), at_ms=9)
    await subject.journal.record_end(run, [msg("a1", "late", Role.ASSISTANT)])
    got, _, messages = await stored(subject.uow)
    assert got is not None and got.status is RunStatus.CANCELLED
    assert messages == ["u1"]


async def test_ending_an_unknown_run_is_not_found(subject: Subject) -> None:
    run = new_run("ghost")
    run.start()
    run.fail(code="x", message="y", at_ms=1)
    with pytest.raises(NotFound):
        await subject.journal.record_end(run, [])


async def test_concurrent_records_commit_together_and_fail_alone(subject: Subject) -> None:
    starts = [
        subject.journal.record_start(new_run(f"r{i}", thread=f"t{i}"), [msg(f"u{i}")])
        for i in range(50)
    ]
    duplicate = subject.journal.record_start(new_run("r7", thread="t7"), [msg("zz")])
    results = await asyncio.gather(*starts, duplicate, return_exceptions=True)
    assert all(r is None for r in results[:50])
    assert isinstance(results[50], Conflict)
    for i in range(50):
        run, _, messages = await stored(subject.uow, run_id=f"r{i}", thread=f"t{i}")
        assert run is not None and messages == [f"u{i}"]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=5), min_size=1, max_size=6)
)
def test_any_sequence_of_resent_histories_keeps_first_occurrences_in_order(
    tmp_path_factory, histories
) -> None:
    expected: list[str] = []
    for history in histories:
        for m in history:
            if m not in expected:
                expected.append(m)

    async def scenario(kind: str) -> None:
        async for s in make_subject(kind, None, tmp_path_factory.mktemp(kind)):
            for i, history in enumerate(histories):
                await s.journal.record_start(new_run(f"r{i}"), [msg(m) for m in history])
            assert (await stored(s.uow))[2] == expected

    for kind in KINDS[:3]:  # Postgres runs the example-based tests; its fixtures are per test
        asyncio.run(scenario(kind))


async def test_tool_calls_and_tool_results_round_trip(subject: Subject) -> None:
    call = ToolCall(id="call_1", name="kb_search", arguments='{"query": "refunds"}')
    asked = Message(
        id=MessageId("a1"), role=Role.ASSISTANT, content="", tool_calls=(call,), created_at_ms=2
    )
    answered = Message(
        id=MessageId("t1"),
        role=Role.TOOL,
        content='{"results": []}',
        tool_call_id="call_1",
        created_at_ms=3,
    )
    run = new_run()
    await subject.journal.record_start(run, [msg("u1")])
    run.start()
    run.succeed(usage=Usage(), at_ms=4)
    await subject.journal.record_end(run, [asked, answered])
    async with subject.uow.transaction(A) as tx:
        listed = await tx.threads.list_messages(A, ThreadId("t1"))
    assert listed[1:] == [asked, answered]


def invocation(call_id: str, tool: str, outcome: ToolOutcome, at: int, **kw) -> ToolInvocation:
    return ToolInvocation(
        tenant_id=A,
        subject="key:k1",
        run_id="r1",
        tool=tool,
        arguments_digest="d" * 32,
        outcome=outcome,
        latency_ms=12.4,
        at_ms=at,
        call_id=call_id,
        **kw,
    )


async def test_a_runs_tool_calls_are_on_the_trail_between_its_start_and_its_end(
    subject: Subject,
) -> None:
    run = new_run()
    await subject.journal.record_start(run, [msg("u1")])
    run.start()
    run.succeed(usage=Usage(input_tokens=3, output_tokens=4), at_ms=9)
    calls = [
        invocation("call_1", "kb_search", ToolOutcome.OK, 7),
        invocation("call_2", "create_task", ToolOutcome.FAILED, 8, error_code="not_found"),
    ]
    await subject.journal.record_end(run, [msg("a1", "answer", Role.ASSISTANT)], calls)
    entries = await verified_trail(subject.uow, A)
    assert [(e.action, e.subject, e.at_ms) for e in entries] == [
        ("run.started", "r1", 5),
        ("tool.called", "call_1", 7),
        ("tool.called", "call_2", 8),
        ("run.finished", "r1", 9),
    ]
    assert {e.actor for e in entries} == {"agent:assistant"}
    assert dict(entries[1].details) == {
        "tool": "kb_search",
        "run": "r1",
        "outcome": "ok",
        "duration_ms": "12",
    }
    assert dict(entries[2].details)["outcome"] == "failed"
    assert dict(entries[2].details)["error"] == "not_found"
    assert "d" * 32 not in repr(entries)  # not even the digest of the arguments


async def test_tool_calls_of_an_ending_that_does_not_stand_are_not_on_the_trail(
    subject: Subject,
) -> None:
    run = new_run()
    await subject.journal.record_start(run, [msg("u1")])
    run.start()
    run.fail(code="boom", message="y", at_ms=8)
    await subject.journal.record_end(
        run, [], [invocation("call_1", "kb_search", ToolOutcome.OK, 7)]
    )
    again = copy.copy(run)
    await subject.journal.record_end(
        again, [], [invocation("call_2", "kb_search", ToolOutcome.OK, 9)]
    )
    entries = await verified_trail(subject.uow, A)
    assert [(e.action, e.subject) for e in entries] == [
        ("run.started", "r1"),
        ("tool.called", "call_1"),
        ("run.finished", "r1"),
    ]
    assert dict(entries[-1].details)["error"] == "boom"


async def test_concurrent_runs_of_two_tenants_keep_each_trail_whole_and_in_order(
    subject: Subject,
) -> None:
    runs = [new_run(f"r{i}", tenant, thread=f"t{i % 3}") for i in range(20) for tenant in (A, B)]
    await asyncio.gather(
        *(subject.journal.record_start(r, [msg(f"u{r.id}", role=Role.USER)]) for r in runs)
    )
    for r in runs:
        r.start()
        r.succeed(usage=Usage(input_tokens=1, output_tokens=2), at_ms=9)
    await asyncio.gather(
        *(subject.journal.record_end(r, [msg(f"a{r.id}", role=Role.ASSISTANT)]) for r in runs)
    )
    for tenant in (A, B):
        entries = await verified_trail(subject.uow, tenant)
        assert len(entries) == 40
        started = [e.subject for e in entries if e.action == "run.started"]
        finished = [e.subject for e in entries if e.action == "run.finished"]
        assert sorted(started) == sorted(finished) == sorted(f"r{i}" for i in range(20))
        for run_id in started:
            order = [e.action for e in entries if e.subject == run_id]
            assert order == ["run.started", "run.finished"]
        async with subject.uow.transaction(tenant) as tx:
            for t in range(3):
                listed = await tx.threads.list_messages(tenant, ThreadId(f"t{t}"))
                # Each run's user message precedes its answer in the thread.
                ids = [m.id for m in listed]
                assert len(ids) == len(set(ids))
                for i in range(t, 20, 3):
                    assert ids.index(MessageId(f"ur{i}")) < ids.index(MessageId(f"ar{i}"))


async def test_two_journals_on_one_database_share_one_unbroken_chain(subject: Subject) -> None:
    other = subject.twin()
    runs = [new_run(f"r{i}", thread=f"t{i}") for i in range(30)]
    await asyncio.gather(
        *(
            (subject.journal if i % 2 else other).record_start(r, [msg(f"u{i}")])
            for i, r in enumerate(runs)
        )
    )
    entries = await verified_trail(subject.uow, A)
    assert [e.seq for e in entries] == list(range(1, 31))
    assert sorted(e.subject for e in entries) == sorted(r.id for r in runs)


async def test_a_run_id_taken_through_another_journal_is_a_conflict(subject: Subject) -> None:
    await subject.twin().record_start(new_run("r1"), [msg("u1")])
    results = await asyncio.gather(
        subject.journal.record_start(new_run("r1"), [msg("u2")]),
        subject.journal.record_start(new_run("r2", thread="t2"), [msg("u3")]),
        return_exceptions=True,
    )
    assert isinstance(results[0], Conflict)
    assert results[1] is None
    assert (await stored(subject.uow))[2] == ["u1"]
    assert (await stored(subject.uow, run_id="r2", thread="t2"))[2] == ["u3"]
