"""TaskRepository contract on memory, SQLite and Postgres: tasks are kept per tenant, paged
newest first with filters, and each one added, changed or deleted is on its tenant's audit
trail, written in the same transaction."""

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
from application.tools.ports import TaskFilter, TaskRepository
from domain.audit.events import task_created, task_deleted, task_updated
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


async def test_tasks_are_paged_newest_first_and_filtered(subject: Subject) -> None:
    repo = subject.tasks
    await subject.add(task("a", at=1, due="2026-01-10", assignee="ana"))
    await subject.add(task("b", at=2, due="2026-02-01"))
    await subject.add(task("c", at=3, status=TaskStatus.DONE, assignee="ana"))
    await subject.add(task("d", at=3, due="2025-12-31", assignee="bo"))
    await subject.add(task("e", at=4, due="not a day"))  # an agent's free text, read back as is
    assert [t.id for t in await repo.page(A, limit=10)] == ["e", "d", "c", "b", "a"]
    done = TaskFilter(status=TaskStatus.DONE)
    assert [t.id for t in await repo.page(A, limit=10, where=done)] == ["c"]
    open_of_ana = TaskFilter(status=TaskStatus.OPEN, assignee="ana")
    assert [t.id for t in await repo.page(A, limit=10, where=open_of_ana)] == ["a"]
    january = TaskFilter(due_from="2026-01-01", due_to="2026-01-31")
    assert [t.id for t in await repo.page(A, limit=10, where=january)] == ["a"]
    until_new_year = TaskFilter(due_to="2026-01-10")
    assert [t.id for t in await repo.page(A, limit=10, where=until_new_year)] == ["d", "a"]
    after = (3, "d")
    assert [t.id for t in await repo.page(A, limit=2, after=after)] == ["c", "b"]
    assert (await repo.get(A, "a")) == task("a", at=1, due="2026-01-10", assignee="ana")


async def test_a_saved_task_changes_and_is_on_the_audit_trail(subject: Subject) -> None:
    await subject.add(task("t1", at=5))
    before = await subject.tasks.get(A, "t1")
    assert before is not None
    after = before.changed(status=TaskStatus.DONE, assignee="ana", due="2026-03-01")
    audit = task_updated(before, after, actor="key:k1")
    assert await subject.tasks.save(after, audit=audit, at_ms=77)
    assert await subject.tasks.get(A, "t1") == after
    assert await subject.tasks.list_open(A, limit=10) == []
    [_, entry] = await verified_trail(subject.uow, A)
    assert (entry.action, entry.actor, entry.subject, entry.at_ms) == (
        "task.updated",
        "key:k1",
        "t1",
        77,
    )
    assert dict(entry.details) == {
        "changed": "due,status,assignee",
        "status": "done",
        "assignee": "ana",
    }


async def test_a_deleted_task_is_gone_and_on_the_audit_trail(subject: Subject) -> None:
    await subject.add(task("t1"))
    gone = await subject.tasks.get(A, "t1")
    assert gone is not None
    assert await subject.tasks.delete(A, "t1", audit=task_deleted(gone, actor="key:k1"), at_ms=9)
    assert await subject.tasks.get(A, "t1") is None
    assert actions(await verified_trail(subject.uow, A)) == ["task.created", "task.deleted"]
    again = task_deleted(gone, actor="key:k1")
    assert not await subject.tasks.delete(A, "t1", audit=again, at_ms=10)
    assert not await subject.tasks.save(gone, audit=again, at_ms=10)
    assert actions(await verified_trail(subject.uow, A)) == ["task.created", "task.deleted"]


async def test_another_tenants_task_is_never_read_changed_or_deleted(subject: Subject) -> None:
    await subject.add(task("same", A, notes="of A"))
    await subject.add(task("same", B, notes="of B"))
    await subject.add(task("only-b", B))
    assert [t.id for t in await subject.tasks.page(A, limit=10)] == ["same"]
    assert await subject.tasks.get(A, "only-b") is None
    theirs = await subject.tasks.get(B, "only-b")
    assert theirs is not None
    audit = task_deleted(theirs, actor="key:k1")
    assert not await subject.tasks.delete(A, "only-b", audit=audit, at_ms=1)
    mine = await subject.tasks.get(A, "same")
    assert mine is not None and mine.notes == "of A"
    done = mine.changed(status=TaskStatus.DONE)
    assert await subject.tasks.save(done, audit=task_updated(mine, done, actor="k"), at_ms=2)
    assert (await subject.tasks.get(B, "same")).status is TaskStatus.OPEN  # type: ignore[union-attr]
    assert await subject.tasks.get(B, "only-b") == theirs
    assert actions(await verified_trail(subject.uow, B)) == ["task.created", "task.created"]


async def test_a_change_whose_audit_entry_fails_is_not_made(subject: Subject, monkeypatch) -> None:
    await subject.add(task("t1"))
    stored = await subject.tasks.get(A, "t1")
    assert stored is not None
    done = stored.changed(status=TaskStatus.DONE)
    break_audit_appends(monkeypatch)
    with pytest.raises(ServiceUnavailable):
        await subject.tasks.save(done, audit=task_updated(stored, done, actor="k"), at_ms=1)
    with pytest.raises(ServiceUnavailable):
        await subject.tasks.delete(A, "t1", audit=task_deleted(stored, actor="k"), at_ms=1)
    assert await subject.tasks.get(A, "t1") == stored
