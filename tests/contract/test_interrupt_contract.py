"""InterruptStore contract on memory, SQLite and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.interrupts import MemoryInterruptStore
from adapters.sqla.interrupts import SqlaInterruptStore
from application.conversation.ports import InterruptStore
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import RunId, TenantId, ThreadId
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request, tmp_path) -> AsyncIterator[InterruptStore]:
    if request.param == "memory":
        yield MemoryInterruptStore()
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield SqlaInterruptStore(db)


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


async def test_added_interrupts_are_pending_on_their_thread_only(store: InterruptStore) -> None:
    await store.add([interrupt("i1"), interrupt("i2"), interrupt("i3", thread="t2")])
    assert sorted(i.id for i in await store.pending(A, ThreadId("t1"))) == ["i1", "i2"]
    assert (await store.pending(A, ThreadId("t2")))[0] == interrupt("i3", thread="t2")


async def test_closed_interrupts_are_no_longer_pending_and_close_only_once(
    store: InterruptStore,
) -> None:
    await store.add([interrupt("i1"), interrupt("i2")])
    await store.close(A, ["i1"], InterruptStatus.RESOLVED)
    await store.close(A, ["i1"], InterruptStatus.CANCELLED)
    assert [i.id for i in await store.pending(A, ThreadId("t1"))] == ["i2"]


async def test_another_tenant_neither_sees_nor_closes_them(store: InterruptStore) -> None:
    await store.add([interrupt("i1")])
    assert await store.pending(B, ThreadId("t1")) == []
    await store.close(B, ["i1"], InterruptStatus.CANCELLED)
    assert [i.id for i in await store.pending(A, ThreadId("t1"))] == ["i1"]
