"""TaskRepository contract on memory, SQLite and Postgres: tasks are kept per tenant, and each
one added is on its tenant's audit trail, written in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.tools import MemoryTaskRepository
from adapters.sqla.tasks import SqlaTaskRepository
from adapters.sqla.uow import SqlaUnitOfWork
from application.errors import Conflict, ServiceUnavailable
from application.ports import UnitOfWork
from application.tools.ports import TaskRepository
from domain.audit.events import task_created
from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus
from tests.audit_support import actions, break_audit_appends, verified_trail
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

A, B = TenantId("ten_a"), TenantId("ten_b")


@dataclass
class Subject:
    tasks: TaskRepository
    uow: UnitOfWork  # reads the audit trail the tasks are written to

    async def add(self, task: Task, run_id: str = "r1") -> None:
        await self.tasks.add(task, audit=task_created(task, actor="agent:assistant", run_id=run_id))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def subject(request, tmp_path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        uow = MemoryUnitOfWork()
        yield Subject(MemoryTaskRepository(uow), uow)
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield Subject(SqlaTaskRepository(db), SqlaUnitOfWork(db))


def task(id: str, tenant: TenantId = A, at: int = 1, **kw) -> Task:
    return Task(id=id, tenant_id=tenant, title=f"Task {id}", created_at_ms=at, **kw)


async def test_open_tasks_are_listed_newest_first_up_to_the_limit(subject: Subject) -> None:
    tasks = subject.tasks
    for i, at in enumerate((5, 9, 7)):
        await subject.add(task(f"t{i}", at=at, notes="n", due="2026-12-01", created_by="user:x"))
    await subject.add(task("done", at=10, status=TaskStatus.DONE))
    listed = await tasks.list_open(A, limit=10)
    assert [t.id for t in listed] == ["t1", "t2", "t0"]
    assert listed[0] == task("t1", at=9, notes="n", due="2026-12-01", created_by="user:x")
    assert [t.id for t in await tasks.list_open(A, limit=2)] == ["t1", "t2"]


async def test_tasks_of_one_tenant_are_never_listed_for_another(subject: Subject) -> None:
    await subject.add(task("same-id", A))
    await subject.add(task("same-id", B))
    await subject.add(task("only-b", B))
    assert [t.id for t in await subject.tasks.list_open(A, limit=10)] == ["same-id"]
    assert {t.id for t in await subject.tasks.list_open(B, limit=10)} == {"same-id", "only-b"}


async def test_adding_a_task_id_twice_is_a_conflict(subject: Subject) -> None:
    await subject.add(task("t1"))
    with pytest.raises(Conflict):
        await subject.add(task("t1"))


async def test_an_added_task_is_on_its_tenants_audit_trail_without_its_contents(
    subject: Subject,
) -> None:
    await subject.add(task("t1", at=42, notes="call Ana at home", created_by="key:k1"), "run-7")
    await subject.add(task("t2", B, at=43))
    entries = await verified_trail(subject.uow, A)
    assert actions(entries) == ["task.created"]
    entry = entries[0]
    assert (entry.actor, entry.subject, entry.at_ms) == ("agent:assistant", "t1", 42)
    assert dict(entry.details) == {"created_by": "key:k1", "run": "run-7"}
    assert "Task t1" not in repr(entry) and "call Ana" not in repr(entry)
    assert [e.subject for e in await verified_trail(subject.uow, B)] == ["t2"]


async def test_a_task_that_is_not_stored_leaves_no_audit_entry(subject: Subject) -> None:
    await subject.add(task("t1"))
    with pytest.raises(Conflict):
        await subject.add(task("t1", at=99))
    entries = await verified_trail(subject.uow, A)
    assert [(e.action, e.at_ms) for e in entries] == [("task.created", 1)]


async def test_a_task_whose_audit_entry_fails_is_not_stored(subject: Subject, monkeypatch) -> None:
    break_audit_appends(monkeypatch)
    with pytest.raises(ServiceUnavailable):
        await subject.add(task("t1"))
    assert await subject.tasks.list_open(A, limit=10) == []
