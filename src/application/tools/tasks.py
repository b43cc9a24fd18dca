"""Tasks as resources: the tasks the agent (or anyone) created, listed with filters, read,
completed, reassigned, edited and deleted by a person, each change on the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from application.authz import authorize
from application.errors import InvalidInput, NotFound
from application.pagination import Page, check_limit, decode_cursor, page_of
from application.ports import Clock
from application.tools.ports import TaskFilter, TaskRepository
from domain.audit.events import task_deleted, task_updated
from domain.errors import DomainError
from domain.tenancy.model import Principal, Scope
from domain.tools.model import UNSET, Task, TaskStatus, Unset, due_date


def _invalid(exc: DomainError) -> InvalidInput:
    return InvalidInput(exc.message, code="validation_failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQuery:
    status: str | None = None
    assignee: str | None = None
    due_from: str | None = None
    due_to: str | None = None
    limit: int | None = None
    cursor: str | None = None


class ListTasks:
    def __init__(self, tasks: TaskRepository) -> None:
        self._tasks = tasks

    async def __call__(self, principal: Principal, query: TaskQuery) -> Page[Task]:
        authorize(principal, Scope.TASKS_READ, write=False, action="read tasks")
        size = check_limit(query.limit)
        try:
            where = TaskFilter(
                status=None if query.status is None else TaskStatus(query.status),
                assignee=query.assignee,
                due_from=None if query.due_from is None else due_date(query.due_from),
                due_to=None if query.due_to is None else due_date(query.due_to),
            )
        except DomainError as exc:
            raise _invalid(exc) from exc
        except ValueError as exc:
            states = ", ".join(s.value for s in TaskStatus)
            raise InvalidInput(f"status is one of: {states}", code="validation_failed") from exc
        after = None
        if query.cursor is not None:
            at_ms, task_id = decode_cursor(query.cursor, (int, str))
            after = (int(at_ms), str(task_id))
        found = await self._tasks.page(
            principal.tenant_id, limit=size + 1, where=where, after=after
        )
        return page_of(found, size, lambda t: (t.created_at_ms, t.id))


class GetTask:
    def __init__(self, tasks: TaskRepository) -> None:
        self._tasks = tasks

    async def __call__(self, principal: Principal, task_id: str) -> Task:
        authorize(principal, Scope.TASKS_READ, write=False, action="read tasks")
        task = await self._tasks.get(principal.tenant_id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskChange:
    """Fields left ``UNSET`` stay as they are; ``due`` and ``assignee`` may be set to None."""

    title: str | None = None
    notes: str | None = None
    due: str | Unset | None = UNSET
    status: str | None = None
    assignee: str | Unset | None = UNSET


class UpdateTask:
    """Completes, reopens, reassigns or edits a task. A change that changes nothing is not
    written, and not audited."""

    def __init__(self, tasks: TaskRepository, clock: Clock) -> None:
        self._tasks = tasks
        self._clock = clock

    async def __call__(self, principal: Principal, task_id: str, change: TaskChange) -> Task:
        authorize(principal, Scope.TASKS_WRITE, write=True, action="change tasks")
        task = await self._tasks.get(principal.tenant_id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        try:
            status = None if change.status is None else TaskStatus(change.status)
        except ValueError as exc:
            states = ", ".join(s.value for s in TaskStatus)
            raise InvalidInput(f"status is one of: {states}", code="validation_failed") from exc
        try:
            changed = task.changed(
                title=change.title,
                notes=change.notes,
                due=change.due,
                status=status,
                assignee=change.assignee,
            )
        except DomainError as exc:
            raise _invalid(exc) from exc
        if not task.differences(changed):
            return task
        audit = task_updated(task, changed, actor=principal.subject)
        if not await self._tasks.save(changed, audit=audit, at_ms=self._clock.now_ms()):
            raise NotFound(f"no task {task_id}")
        return changed


class DeleteTask:
    def __init__(self, tasks: TaskRepository, clock: Clock) -> None:
        self._tasks = tasks
        self._clock = clock

    async def __call__(self, principal: Principal, task_id: str) -> None:
        authorize(principal, Scope.TASKS_WRITE, write=True, action="delete tasks")
        task = await self._tasks.get(principal.tenant_id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        audit = task_deleted(task, actor=principal.subject)
        if not await self._tasks.delete(
            principal.tenant_id, task_id, audit=audit, at_ms=self._clock.now_ms()
        ):
            raise NotFound(f"no task {task_id}")
