"""TaskRepository contract on memory, SQLite and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.tools import MemoryTaskRepository
from adapters.sqla.tasks import SqlaTaskRepository
from application.errors import Conflict
from application.tools.ports import TaskRepository
from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def tasks(request, tmp_path) -> AsyncIterator[TaskRepository]:
    if request.param == "memory":
        yield MemoryTaskRepository()
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield SqlaTaskRepository(db)


def task(id: str, tenant: TenantId = A, at: int = 1, **kw) -> Task:
    return Task(id=id, tenant_id=tenant, title=f"Task {id}", created_at_ms=at, **kw)


async def test_open_tasks_are_listed_newest_first_up_to_the_limit(tasks) -> None:
    for i, at in enumerate((5, 9, 7)):
        await tasks.add(task(f"t{i}", at=at, notes="n", due="2026-12-01", created_by="user:x"))
    await tasks.add(task("done", at=10, status=TaskStatus.DONE))
    listed = await tasks.list_open(A, limit=10)
    assert [t.id for t in listed] == ["t1", "t2", "t0"]
    assert listed[0] == task("t1", at=9, notes="n", due="2026-12-01", created_by="user:x")
    assert [t.id for t in await tasks.list_open(A, limit=2)] == ["t1", "t2"]


async def test_tasks_of_one_tenant_are_never_listed_for_another(tasks) -> None:
    await tasks.add(task("same-id", A))
    await tasks.add(task("same-id", B))
    await tasks.add(task("only-b", B))
    assert [t.id for t in await tasks.list_open(A, limit=10)] == ["same-id"]
    assert {t.id for t in await tasks.list_open(B, limit=10)} == {"same-id", "only-b"}


async def test_adding_a_task_id_twice_is_a_conflict(tasks) -> None:
    await tasks.add(task("t1"))
    with pytest.raises(Conflict):
        await tasks.add(task("t1"))
