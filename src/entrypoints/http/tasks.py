"""Tasks as resources: listed with filters, read, completed, reassigned, edited, deleted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, delete, get, patch
from litestar.params import FromPath, QueryParameter

from application.pagination import MAX_LIMIT
from application.tools.tasks import (
    DeleteTask,
    GetTask,
    ListTasks,
    TaskChange,
    TaskQuery,
    UpdateTask,
)
from domain.tenancy.model import Principal
from domain.tools.model import UNSET, Task
from entrypoints.http.inputs import json_body


class TaskOut(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    title: str
    notes: str
    due: str | None
    status: str
    assignee: str | None
    created_by: str
    created_at_ms: int

    @classmethod
    def of(cls, t: Task) -> TaskOut:
        return cls(
            id=t.id,
            title=t.title,
            notes=t.notes,
            due=t.due,
            status=t.status.value,
            assignee=t.assignee,
            created_by=t.created_by,
            created_at_ms=t.created_at_ms,
        )


class TasksOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Newest first; ``nextCursor`` (absent on the last page) asks for the next page."""

    tasks: list[TaskOut]
    next_cursor: str | None = None


class TaskPatchIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Only the fields sent change. ``status`` ``done`` completes the task, ``open`` reopens
    it; ``assignee`` hands it to someone (null: to nobody); ``due`` is ``YYYY-MM-DD`` (null:
    no due date)."""

    title: str | msgspec.UnsetType = msgspec.UNSET
    notes: str | msgspec.UnsetType = msgspec.UNSET
    due: str | msgspec.UnsetType | None = msgspec.UNSET
    status: Literal["open", "done"] | msgspec.UnsetType = msgspec.UNSET
    assignee: str | msgspec.UnsetType | None = msgspec.UNSET


_task_patch = msgspec.json.Decoder(TaskPatchIn)


def _change(body: TaskPatchIn) -> TaskChange:
    def kept(value: Any) -> Any:
        return None if value is msgspec.UNSET else value

    def clearable(value: Any) -> Any:
        return UNSET if value is msgspec.UNSET else value

    return TaskChange(
        title=kept(body.title),
        notes=kept(body.notes),
        due=clearable(body.due),
        status=kept(body.status),
        assignee=clearable(body.assignee),
    )


class TaskController(Controller):
    path = "/v1/tasks"
    tags = ["tasks"]

    @get("/", summary="The tenant's tasks, newest first, filtered, a page at a time")
    @inject
    async def list_tasks(
        self,
        principal: FromDishka[Principal],
        tasks: FromDishka[ListTasks],
        status: Annotated[Literal["open", "done"] | None, QueryParameter()] = None,
        assignee: Annotated[
            str | None, QueryParameter(description="only tasks handed to this assignee")
        ] = None,
        due_from: Annotated[
            str | None,
            QueryParameter(name="dueFrom", description="due on or after this day (YYYY-MM-DD)"),
        ] = None,
        due_to: Annotated[
            str | None,
            QueryParameter(name="dueTo", description="due on or before this day (YYYY-MM-DD)"),
        ] = None,
        limit: Annotated[
            int | None, QueryParameter(ge=1, le=MAX_LIMIT, description="at most this many (100)")
        ] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="the nextCursor of the page before")
        ] = None,
    ) -> TasksOut:
        page = await tasks(
            principal,
            TaskQuery(
                status=status,
                assignee=assignee,
                due_from=due_from,
                due_to=due_to,
                limit=limit,
                cursor=cursor,
            ),
        )
        return TasksOut(tasks=[TaskOut.of(t) for t in page.items], next_cursor=page.next_cursor)

    @get("/{task_id:str}", summary="A task")
    @inject
    async def get_task(
        self, task_id: FromPath[str], principal: FromDishka[Principal], get: FromDishka[GetTask]
    ) -> TaskOut:
        return TaskOut.of(await get(principal, task_id))

    @patch(
        "/{task_id:str}",
        summary="Complete, reopen, reassign or edit a task",
        opt={"body": TaskPatchIn},
    )
    @inject
    async def update_task(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        principal: FromDishka[Principal],
        update: FromDishka[UpdateTask],
    ) -> TaskOut:
        body = await json_body(request, _task_patch)
        return TaskOut.of(await update(principal, task_id, _change(body)))

    @delete("/{task_id:str}", status_code=204, summary="Delete a task")
    @inject
    async def delete_task(
        self,
        task_id: FromPath[str],
        principal: FromDishka[Principal],
        delete_task: FromDishka[DeleteTask],
    ) -> None:
        await delete_task(principal, task_id)
