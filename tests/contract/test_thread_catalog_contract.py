"""ThreadCatalog contract on memory, SQLite and Postgres (row-level security in force):
threads are listed newest first a page at a time with their summaries, renamed and deleted
with their runs, messages and interrupts, each change on the tenant's audit trail in its own
transaction, and never across tenants. The usage of a deleted thread's runs stays counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.memory.interrupts import MemoryInterruptStore
from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.threads import MemoryThreadCatalog
from adapters.memory.usage import MemoryUsageLedger
from adapters.sqla.interrupts import SqlaInterruptStore
from adapters.sqla.threads import SqlaThreadCatalog
from adapters.sqla.uow import SqlaUnitOfWork
from adapters.sqla.usage import SqlaUsageLedger
from application.conversation.ports import InterruptStore
from application.conversation.threads import ThreadCatalog
from application.errors import Conflict, ServiceUnavailable
from application.ports import UnitOfWork
from application.quota.ports import UsageLedger
from domain.conversation.interrupts import Interrupt
from domain.conversation.model import Message, Role, Run, Usage
from domain.conversation.threads import UNTITLED, ThreadRemoval
from domain.ids import MessageId, RunId, TenantId, ThreadId
from tests.audit_support import actions, break_audit_appends, verified_trail
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")
PERSON = "key:k1"


@dataclass
class Subject:
    catalog: ThreadCatalog
    uow: UnitOfWork
    interrupts: InterruptStore
    usage: UsageLedger

    async def conversation(
        self,
        thread: str,
        *,
        tenant: TenantId = A,
        at: int = 100,
        text: str = "How do refunds work?",
        runs: int = 1,
        finish: bool = True,
        tokens: int = 10,
    ) -> None:
        """``runs`` runs on ``thread``, one a second from ``at``, each with a user message and
        (when ``finish``) an answer."""
        journal = TransactionalRunJournal(self.uow)
        for n in range(runs):
            started = at + n * 1000
            run = Run(
                id=RunId(f"{thread}-r{n}"),
                tenant_id=tenant,
                thread_id=ThreadId(thread),
                agent="assistant",
                created_at_ms=started,
            )
            asked = Message(id=MessageId(f"{thread}-u{n}"), role=Role.USER, content=f"{text} ({n})")
            await journal.record_start(run, [asked])
            if not finish:
                continue
            run.start()
            run.succeed(usage=Usage(input_tokens=tokens, output_tokens=tokens), at_ms=started + 5)
            answer = Message(id=MessageId(f"{thread}-a{n}"), role=Role.ASSISTANT, content="Sure.")
            await journal.record_end(run, [answer])

    async def messages(self, tenant: TenantId, thread: str) -> list[Message]:
        async with self.uow.transaction(tenant) as tx:
            return await tx.threads.list_messages(tenant, ThreadId(thread))

    async def run(self, tenant: TenantId, run_id: str) -> Run | None:
        async with self.uow.transaction(tenant) as tx:
            return await tx.runs.get(tenant, RunId(run_id))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def subject(request, tmp_path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        uow = MemoryUnitOfWork()
        interrupts = MemoryInterruptStore(uow)
        yield Subject(MemoryThreadCatalog(uow, interrupts), uow, interrupts, MemoryUsageLedger(uow))
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield Subject(
            SqlaThreadCatalog(db), SqlaUnitOfWork(db), SqlaInterruptStore(db), SqlaUsageLedger(db)
        )


def interrupt(id: str, thread: str, tenant: TenantId = A) -> Interrupt:
    return Interrupt(
        id=id,
        tenant_id=tenant,
        thread_id=ThreadId(thread),
        run_id=RunId(f"{thread}-r0"),
        tool_call_id=f"call-{id}",
        tool_name="create_task",
        arguments="{}",
        reason="tool_approval",
        message="Approve?",
        expires_at_ms=10**12,
    )


async def test_threads_are_listed_newest_first_with_their_summaries(subject: Subject) -> None:
    await subject.conversation("old", at=100, runs=2, text="  Where   is my\n parcel?  ")
    await subject.conversation("new", at=5000, text="x" * 300)
    await subject.conversation("unfinished", at=9000, finish=False)
    listed = await subject.catalog.page(A, limit=10)
    assert [s.id for s in listed] == ["unfinished", "new", "old"]
    unfinished, new, old = listed
    assert old.title == "Where is my parcel? (0)" and not old.named
    assert (old.run_count, old.created_at_ms, old.last_activity_ms) == (2, 100, 1105)
    assert len(new.title) == 80 and new.title.endswith("…")
    assert (new.run_count, new.last_activity_ms) == (1, 5005)
    assert (unfinished.run_count, unfinished.last_activity_ms) == (1, 9000)
    assert await subject.catalog.summary(A, ThreadId("old")) == old


async def test_pages_follow_each_other_without_gaps_or_repeats(subject: Subject) -> None:
    # Two threads share a creation time: the id orders them.
    for n, at in enumerate((10, 20, 20, 30, 40)):
        await subject.conversation(f"t{n}", at=at)
    seen: list[str] = []
    after = None
    while True:
        page = await subject.catalog.page(A, limit=2, after=after)
        if not page:
            break
        seen += [s.id for s in page]
        after = (page[-1].created_at_ms, page[-1].id)
    assert seen == ["t4", "t3", "t2", "t1", "t0"]


async def test_a_thread_without_a_user_message_is_untitled(subject: Subject) -> None:
    journal = TransactionalRunJournal(subject.uow)
    run = Run(id=RunId("r"), tenant_id=A, thread_id=ThreadId("quiet"), agent="a", created_at_ms=1)
    await journal.record_start(run, [])
    [summary] = await subject.catalog.page(A, limit=5)
    assert (summary.title, summary.named) == (UNTITLED, False)


async def test_a_renamed_thread_keeps_its_name_until_cleared(subject: Subject) -> None:
    await subject.conversation("t1")
    renamed = await subject.catalog.rename(A, ThreadId("t1"), "Refunds", actor=PERSON, at_ms=7)
    assert renamed is not None and (renamed.title, renamed.named) == ("Refunds", True)
    assert (await subject.catalog.page(A, limit=1))[0].title == "Refunds"
    cleared = await subject.catalog.rename(A, ThreadId("t1"), None, actor=PERSON, at_ms=8)
    assert cleared is not None and cleared.title == "How do refunds work? (0)"
    entries = [e for e in await verified_trail(subject.uow, A) if e.action == "thread.renamed"]
    assert [(e.actor, e.subject, e.at_ms, dict(e.details)) for e in entries] == [
        (PERSON, "t1", 7, {"title": "set"}),
        (PERSON, "t1", 8, {"title": "derived"}),
    ]
    assert "Refunds" not in repr(entries)


async def test_deleting_a_thread_takes_its_runs_messages_and_interrupts(subject: Subject) -> None:
    await subject.conversation("t1", runs=2)
    await subject.conversation("t2")
    await subject.interrupts.add([interrupt("i1", "t1")], actor="agent:assistant", at_ms=1)
    await subject.interrupts.add([interrupt("i2", "t2")], actor="agent:assistant", at_ms=1)
    removal = await subject.catalog.delete(A, ThreadId("t1"), actor=PERSON, at_ms=50)
    assert removal == ThreadRemoval(thread_id=ThreadId("t1"), runs=2, messages=4, interrupts=1)
    assert await subject.catalog.summary(A, ThreadId("t1")) is None
    assert [s.id for s in await subject.catalog.page(A, limit=5)] == ["t2"]
    assert await subject.messages(A, "t1") == []
    assert await subject.run(A, "t1-r0") is None
    assert await subject.interrupts.pending(A, ThreadId("t1")) == []
    # The other thread is untouched.
    assert len(await subject.messages(A, "t2")) == 2
    assert [i.id for i in await subject.interrupts.pending(A, ThreadId("t2"))] == ["i2"]
    entries = await verified_trail(subject.uow, A)
    deleted = entries[-1]
    assert (deleted.action, deleted.actor, deleted.subject, deleted.at_ms) == (
        "thread.deleted",
        PERSON,
        "t1",
        50,
    )
    assert dict(deleted.details) == {"runs": "2", "messages": "4", "interrupts": "1"}


async def test_the_usage_of_a_deleted_threads_runs_stays_counted(subject: Subject) -> None:
    await subject.conversation("t1", at=1000, runs=2, tokens=10)
    await subject.conversation("t2", at=5000, tokens=7)
    before = await subject.usage.tokens_since(A, 0)
    days_before = await subject.usage.daily(A, 0, 10**9)
    assert before == 2 * 20 + 14
    await subject.catalog.delete(A, ThreadId("t1"), actor=PERSON, at_ms=9000)
    assert await subject.usage.tokens_since(A, 0) == before
    assert await subject.usage.tokens_since(A, 3000) == 14
    assert await subject.usage.daily(A, 0, 10**9) == days_before
    # A thread started again under the same id is a new thread; its usage adds up.
    await subject.conversation("t1", at=20_000, tokens=1)
    assert await subject.usage.tokens_since(A, 0) == before + 2
    assert (await subject.catalog.summary(A, ThreadId("t1"))).run_count == 1  # type: ignore[union-attr]


async def test_a_thread_with_a_run_in_progress_is_not_deleted(subject: Subject) -> None:
    await subject.conversation("t1", finish=False)
    with pytest.raises(Conflict) as refused:
        await subject.catalog.delete(A, ThreadId("t1"), actor=PERSON, at_ms=5)
    assert refused.value.code == "thread_busy"
    assert (await subject.catalog.summary(A, ThreadId("t1"))) is not None
    assert "thread.deleted" not in actions(await verified_trail(subject.uow, A))


async def test_an_unknown_thread_is_neither_renamed_nor_deleted(subject: Subject) -> None:
    catalog = subject.catalog
    assert await catalog.summary(A, ThreadId("nope")) is None
    assert await catalog.rename(A, ThreadId("nope"), "x", actor=PERSON, at_ms=1) is None
    assert await catalog.delete(A, ThreadId("nope"), actor=PERSON, at_ms=1) is None
    assert await verified_trail(subject.uow, A) == []


async def test_another_tenants_threads_are_never_listed_renamed_or_deleted(
    subject: Subject,
) -> None:
    await subject.conversation("shared", tenant=A, text="tenant A asks")
    await subject.conversation("shared", tenant=B, text="tenant B asks")
    await subject.conversation("only-b", tenant=B)
    assert [s.id for s in await subject.catalog.page(A, limit=10)] == ["shared"]
    assert (await subject.catalog.summary(A, ThreadId("shared"))).title == "tenant A asks (0)"  # type: ignore[union-attr]
    assert await subject.catalog.summary(A, ThreadId("only-b")) is None
    assert await subject.catalog.rename(A, ThreadId("only-b"), "x", actor=PERSON, at_ms=1) is None
    assert await subject.catalog.delete(A, ThreadId("only-b"), actor=PERSON, at_ms=1) is None
    await subject.catalog.delete(A, ThreadId("shared"), actor=PERSON, at_ms=2)
    # Deleting A's thread leaves B's thread of the same id, and B's trail, alone.
    assert (await subject.catalog.summary(B, ThreadId("shared"))).title == "tenant B asks (0)"  # type: ignore[union-attr]
    assert len(await subject.messages(B, "shared")) == 2
    assert "thread.deleted" not in actions(await verified_trail(subject.uow, B))
    assert await subject.usage.tokens_since(B, 0) == 40


async def test_a_change_whose_audit_entry_fails_is_not_made(subject: Subject, monkeypatch) -> None:
    await subject.conversation("t1")
    before = await subject.catalog.summary(A, ThreadId("t1"))
    break_audit_appends(monkeypatch)
    with pytest.raises(ServiceUnavailable):
        await subject.catalog.rename(A, ThreadId("t1"), "x", actor=PERSON, at_ms=1)
    with pytest.raises(ServiceUnavailable):
        await subject.catalog.delete(A, ThreadId("t1"), actor=PERSON, at_ms=1)
    assert await subject.catalog.summary(A, ThreadId("t1")) == before
    assert len(await subject.messages(A, "t1")) == 2
