"""InterruptStore contract on memory, SQLite and Postgres: interrupts are pending on their
thread until closed once, and each opening and closing is on the tenant's audit trail, written
in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.memory.interrupts import MemoryInterruptStore
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.sqla.interrupts import SqlaInterruptStore
from adapters.sqla.uow import SqlaUnitOfWork
from application.conversation.ports import InterruptStore
from application.errors import ServiceUnavailable, TenantScopeViolation
from application.ports import UnitOfWork
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import RunId, TenantId, ThreadId
from tests.audit_support import actions, break_audit_appends, verified_trail
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")
AGENT, PERSON = "agent:assistant", "key:k1"


@dataclass
class Subject:
    store: InterruptStore
    uow: UnitOfWork  # reads the audit trail

    async def add(self, *items: Interrupt, at_ms: int = 10) -> None:
        await self.store.add(list(items), actor=AGENT, at_ms=at_ms)

    async def close(
        self, tenant: TenantId, ids: list[str], status: InterruptStatus, at_ms: int = 20
    ) -> None:
        await self.store.close(tenant, ids, status, actor=PERSON, at_ms=at_ms)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def subject(request, tmp_path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        uow = MemoryUnitOfWork()
        yield Subject(MemoryInterruptStore(uow), uow)
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield Subject(SqlaInterruptStore(db), SqlaUnitOfWork(db))


def interrupt(id: str, tenant: TenantId = A, thread: str = "t1") -> Interrupt:
    return Interrupt(
        id=id,
        tenant_id=tenant,
        thread_id=ThreadId(thread),
        run_id=RunId("r1"),
        tool_call_id=f"call-{id}",
        tool_name="create_task",
        arguments='{"a": 1}',
        reason="tool_approval",
        message="Approve?",
        expires_at_ms=99,
    )


async def test_added_interrupts_are_pending_on_their_thread_only(subject: Subject) -> None:
    await subject.add(interrupt("i1"), interrupt("i2"), interrupt("i3", thread="t2"))
    store = subject.store
    assert sorted(i.id for i in await store.pending(A, ThreadId("t1"))) == ["i1", "i2"]
    assert (await store.pending(A, ThreadId("t2")))[0] == interrupt("i3", thread="t2")


async def test_closed_interrupts_are_no_longer_pending_and_close_only_once(
    subject: Subject,
) -> None:
    await subject.add(interrupt("i1"), interrupt("i2"))
    await subject.close(A, ["i1"], InterruptStatus.RESOLVED)
    await subject.close(A, ["i1"], InterruptStatus.CANCELLED)
    assert [i.id for i in await subject.store.pending(A, ThreadId("t1"))] == ["i2"]


async def test_another_tenant_neither_sees_nor_closes_them(subject: Subject) -> None:
    await subject.add(interrupt("i1"))
    assert await subject.store.pending(B, ThreadId("t1")) == []
    await subject.close(B, ["i1"], InterruptStatus.CANCELLED)
    assert [i.id for i in await subject.store.pending(A, ThreadId("t1"))] == ["i1"]
    assert await verified_trail(subject.uow, B) == []


async def test_each_interrupt_opened_is_on_the_trail_without_its_arguments(
    subject: Subject,
) -> None:
    await subject.add(interrupt("i1"), interrupt("i2", thread="t2"), at_ms=10)
    entries = await verified_trail(subject.uow, A)
    assert [(e.action, e.subject, e.actor, e.at_ms) for e in entries] == [
        ("interrupt.opened", "i1", AGENT, 10),
        ("interrupt.opened", "i2", AGENT, 10),
    ]
    assert dict(entries[1].details) == {
        "run": "r1",
        "thread": "t2",
        "tool": "create_task",
        "tool_call": "call-i2",
        "reason": "tool_approval",
    }
    assert '"a": 1' not in repr(entries) and "Approve?" not in repr(entries)


async def test_each_interrupt_closed_is_resolved_on_the_trail_once_with_its_outcome(
    subject: Subject,
) -> None:
    await subject.add(interrupt("i1"), interrupt("i2"), interrupt("i3"))
    await subject.close(A, ["i2", "i1"], InterruptStatus.RESOLVED, at_ms=20)
    await subject.close(A, ["i1", "i3"], InterruptStatus.CANCELLED, at_ms=30)  # i1 is closed
    entries = await verified_trail(subject.uow, A)
    resolved = [e for e in entries if e.action == "interrupt.resolved"]
    assert [(e.subject, e.details["outcome"], e.actor, e.at_ms) for e in resolved] == [
        ("i2", "resolved", PERSON, 20),
        ("i1", "resolved", PERSON, 20),
        ("i3", "cancelled", PERSON, 30),
    ]
    assert dict(resolved[0].details) == {
        "outcome": "resolved",
        "run": "r1",
        "tool": "create_task",
        "tool_call": "call-i2",
    }
    assert actions(entries) == ["interrupt.opened"] * 3 + ["interrupt.resolved"] * 3


async def test_interrupts_of_two_tenants_in_one_add_are_refused_and_nothing_is_kept(
    subject: Subject,
) -> None:
    with pytest.raises(TenantScopeViolation):
        await subject.add(interrupt("i1"), interrupt("i2", B))
    assert await subject.store.pending(A, ThreadId("t1")) == []
    assert await verified_trail(subject.uow, A) == []


async def test_an_interrupt_whose_audit_entry_fails_neither_opens_nor_closes(
    subject: Subject, monkeypatch
) -> None:
    await subject.add(interrupt("i1"))
    with monkeypatch.context() as patched:
        break_audit_appends(patched)
        with pytest.raises(ServiceUnavailable):
            await subject.add(interrupt("i2"))
        with pytest.raises(ServiceUnavailable):
            await subject.close(A, ["i1"], InterruptStatus.RESOLVED)
    assert [i.id for i in await subject.store.pending(A, ThreadId("t1"))] == ["i1"]
    assert actions(await verified_trail(subject.uow, A)) == ["interrupt.opened"]
