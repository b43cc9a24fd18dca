"""Threads and tasks as resources, with in-memory adapters: titles, task changes, pages, and the
scopes every use case checks before it acts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.threads import MemoryThreadCatalog
from adapters.memory.tools import MemoryTaskRepository
from application.conversation.threads import DeleteThread, GetThread, ListThreads, RenameThread
from application.errors import Forbidden, InvalidInput, NotFound
from application.tools.tasks import (
    DeleteTask,
    GetTask,
    ListTasks,
    TaskChange,
    TaskQuery,
    UpdateTask,
)
from domain.audit.events import task_created
from domain.conversation.model import Message, Role, Run
from domain.conversation.threads import DERIVED_TITLE, UNTITLED, derived_title, thread_title
from domain.errors import InvariantViolated
from domain.ids import MessageId, RunId, TenantId, ThreadId
from domain.tenancy.model import Principal, Scope
from domain.tenancy.model import Role as KeyRole
from domain.tools.model import Task, TaskStatus, due_date
from tests.audit_support import verified_trail

A = TenantId("ten_a")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def now_ms(self) -> int:
        self.now += 1
        return self.now


def person(*scopes: Scope, role: KeyRole = KeyRole.MEMBER) -> Principal:
    return Principal(
        tenant_id=A,
        tenant_slug="a",
        subject="key:k1",
        role=role,
        scopes=frozenset(scopes) if scopes else None,
    )


@given(st.text(max_size=400))
def test_a_derived_title_is_one_short_line(text: str) -> None:
    title = derived_title(text)
    assert title and "\n" not in title and len(title) <= DERIVED_TITLE
    assert title == UNTITLED or title.rstrip("…").strip() in " ".join(text.split())


def test_a_given_title_is_one_trimmed_line_of_at_most_200_characters() -> None:
    assert thread_title("  Refunds\n for  March ") == "Refunds for March"
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(InvariantViolated):
            thread_title(bad)


@pytest.mark.parametrize(
    "day", ["2026-02-30", "2026-1-01", "tomorrow", "\uff12\uff10\uff12\uff16-01-01", ""]
)
def test_a_due_date_a_person_sets_is_a_calendar_day(day: str) -> None:
    with pytest.raises(InvariantViolated):
        due_date(day)
    assert due_date("2028-02-29") == "2028-02-29"


def test_a_task_change_keeps_what_it_does_not_name_and_clears_what_is_set_to_none() -> None:
    task = Task(id="t", tenant_id=A, title="Call", due="2026-01-01", assignee="ana")
    assert task.changed() == task
    cleared = task.changed(due=None, assignee=None)
    assert (cleared.due, cleared.assignee, cleared.title) == (None, None, "Call")
    assert task.differences(cleared) == ["due", "assignee"]
    with pytest.raises(InvariantViolated):
        task.changed(title=" ")
    with pytest.raises(InvariantViolated):
        task.changed(assignee="x" * 201)


async def threads_world() -> tuple[MemoryUnitOfWork, MemoryThreadCatalog]:
    uow = MemoryUnitOfWork()
    journal = TransactionalRunJournal(uow)
    for n in range(3):
        run = Run(
            id=RunId(f"r{n}"),
            tenant_id=A,
            thread_id=ThreadId(f"t{n}"),
            agent="assistant",
            created_at_ms=n,
        )
        await journal.record_start(
            run, [Message(id=MessageId(f"m{n}"), role=Role.USER, content=f"question {n}")]
        )
        run.start()
        run.cancel(at_ms=n + 1)
        await journal.record_end(run, [])
    return uow, MemoryThreadCatalog(uow)


async def test_threads_are_paged_by_cursor_to_the_last_page() -> None:
    _, catalog = await threads_world()
    list_threads = ListThreads(catalog)
    first = await list_threads(person(), limit=2)
    assert [s.id for s in first.items] == ["t2", "t1"] and first.next_cursor
    last = await list_threads(person(), limit=2, cursor=first.next_cursor)
    assert [s.id for s in last.items] == ["t0"] and last.next_cursor is None
    with pytest.raises(InvalidInput):
        await list_threads(person(), limit=0)
    with pytest.raises(InvalidInput):
        await list_threads(person(), limit=2, cursor="garbage!")


async def test_thread_use_cases_need_the_threads_scopes_and_a_writing_role() -> None:
    uow, catalog = await threads_world()
    clock = Clock()
    runs_only = person(Scope.RUNS)
    reader = person(Scope.THREADS_READ)
    for call in (
        ListThreads(catalog)(runs_only, limit=5),
        GetThread(catalog)(runs_only, "t1"),
        RenameThread(catalog, clock)(reader, "t1", "x"),
        DeleteThread(catalog, clock)(reader, "t1"),
        RenameThread(catalog, clock)(person(role=KeyRole.READONLY), "t1", "x"),
        DeleteThread(catalog, clock)(person(role=KeyRole.READONLY), "t1"),
    ):
        with pytest.raises(Forbidden):
            await call
    assert (await GetThread(catalog)(reader, "t1")).title == "question 1"
    writer = person(Scope.THREADS_WRITE)
    assert (await RenameThread(catalog, clock)(writer, "t1", " Mine ")).title == "Mine"
    with pytest.raises(InvalidInput):
        await RenameThread(catalog, clock)(writer, "t1", "")
    await DeleteThread(catalog, clock)(writer, "t1")
    for call in (
        GetThread(catalog)(reader, "t1"),
        RenameThread(catalog, clock)(writer, "t1", "x"),
        DeleteThread(catalog, clock)(writer, "t1"),
    ):
        with pytest.raises(NotFound):
            await call
    trail = [(e.action, e.actor) for e in await verified_trail(uow, A)][-2:]
    assert trail == [("thread.renamed", "key:k1"), ("thread.deleted", "key:k1")]


async def test_task_use_cases_need_the_tasks_scopes_and_a_writing_role() -> None:
    uow = MemoryUnitOfWork()
    tasks = MemoryTaskRepository(uow)
    clock = Clock()
    task = Task(id="t1", tenant_id=A, title="Call Ana", created_at_ms=1)
    await tasks.add(task, audit=task_created(task, actor="agent:assistant"))
    runs_only, reader = person(Scope.RUNS), person(Scope.TASKS_READ)
    done = TaskChange(status="done")
    for call in (
        ListTasks(tasks)(runs_only, TaskQuery()),
        GetTask(tasks)(runs_only, "t1"),
        UpdateTask(tasks, clock)(reader, "t1", done),
        DeleteTask(tasks, clock)(reader, "t1"),
        UpdateTask(tasks, clock)(person(role=KeyRole.READONLY), "t1", done),
    ):
        with pytest.raises(Forbidden):
            await call
    assert (await GetTask(tasks)(reader, "t1")) == task
    writer = person(Scope.TASKS_WRITE, Scope.TASKS_READ)
    completed = await UpdateTask(tasks, clock)(writer, "t1", done)
    assert completed.status is TaskStatus.DONE
    # Changing nothing writes nothing.
    assert await UpdateTask(tasks, clock)(writer, "t1", done) == completed
    for bad in (
        TaskChange(status="finished"),
        TaskChange(due="soon"),
        TaskChange(title=""),
        TaskChange(assignee="\x07"),
    ):
        with pytest.raises(InvalidInput):
            await UpdateTask(tasks, clock)(writer, "t1", bad)
    with pytest.raises(InvalidInput):
        await ListTasks(tasks)(writer, TaskQuery(status="finished"))
    with pytest.raises(InvalidInput):
        await ListTasks(tasks)(writer, TaskQuery(due_from="2026-13-01"))
    listed = await ListTasks(tasks)(writer, TaskQuery(status="done"))
    assert [t.id for t in listed.items] == ["t1"]
    await DeleteTask(tasks, clock)(writer, "t1")
    with pytest.raises(NotFound):
        await GetTask(tasks)(writer, "t1")
    with pytest.raises(NotFound):
        await UpdateTask(tasks, clock)(writer, "t1", done)
    trail = [(e.action, e.actor) for e in await verified_trail(uow, A)]
    assert trail == [
        ("task.created", "agent:assistant"),
        ("task.updated", "key:k1"),
        ("task.deleted", "key:k1"),
    ]
