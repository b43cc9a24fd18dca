"""Tasks on SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from adapters.scope import TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database, log_driver_error
from adapters.sqla.tables import tasks
from application.errors import ServiceUnavailable
from application.tools.ports import TaskFilter
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus

UNAVAILABLE = "tasks are unavailable"


def _task(r: Any) -> Task:
    return Task(
        id=r.id,
        tenant_id=TenantId(r.tenant_id),
        title=r.title,
        notes=r.notes,
        due=r.due,
        status=TaskStatus(r.status),
        created_by=r.created_by,
        created_at_ms=r.created_at_ms,
        assignee=r.assignee,
    )


def _values(task: Task) -> dict[str, Any]:
    return {
        "title": task.title,
        "notes": task.notes,
        "due": task.due,
        "status": task.status.value,
        "assignee": task.assignee,
    }


class SqlaTaskRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _unavailable(self, exc: SQLAlchemyError) -> ServiceUnavailable:
        log_driver_error(UNAVAILABLE, exc)
        return ServiceUnavailable(UNAVAILABLE)

    async def add(self, task: Task, *, audit: AuditEvent) -> None:
        scope = TenantScope(task.tenant_id)
        try:
            async with self._db.begin(scope) as conn:
                await conn.execute(
                    insert(tasks).values(
                        tenant_id=task.tenant_id,
                        id=task.id,
                        created_by=task.created_by,
                        created_at_ms=task.created_at_ms,
                        **_values(task),
                    )
                )
                trail = SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)
                await trail.append(task.tenant_id, audit, at_ms=task.created_at_ms)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]:
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                rows = await conn.execute(
                    select(tasks)
                    .where(tasks.c.tenant_id == tenant_id, tasks.c.status == TaskStatus.OPEN.value)
                    .order_by(tasks.c.created_at_ms.desc(), tasks.c.id)
                    .limit(limit)
                )
                return [_task(r) for r in rows]
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    async def page(
        self,
        tenant_id: TenantId,
        *,
        limit: int,
        where: TaskFilter | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[Task]:
        c = tasks.c
        where = where or TaskFilter()
        query = select(tasks).where(c.tenant_id == tenant_id)
        if where.status is not None:
            query = query.where(c.status == where.status.value)
        if where.assignee is not None:
            query = query.where(c.assignee == where.assignee)
        if where.due_from is not None:
            query = query.where(c.due >= where.due_from)
        if where.due_to is not None:
            query = query.where(c.due <= where.due_to)
        if after is not None:
            query = query.where(
                or_(
                    c.created_at_ms < after[0],
                    and_(c.created_at_ms == after[0], c.id < after[1]),
                )
            )
        query = query.order_by(c.created_at_ms.desc(), c.id.desc()).limit(limit)
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                return [_task(r) for r in await conn.execute(query)]
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    async def get(self, tenant_id: TenantId, task_id: str) -> Task | None:
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                row = (
                    await conn.execute(
                        select(tasks).where(tasks.c.tenant_id == tenant_id, tasks.c.id == task_id)
                    )
                ).first()
                return None if row is None else _task(row)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    async def save(self, task: Task, *, audit: AuditEvent, at_ms: int) -> bool:
        scope = TenantScope(task.tenant_id)
        try:
            async with self._db.connect(scope) as conn:
                changed = await conn.execute(
                    update(tasks)
                    .where(tasks.c.tenant_id == task.tenant_id, tasks.c.id == task.id)
                    .values(**_values(task))
                )
                if not changed.rowcount:
                    return False
                trail = SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)
                await trail.append(task.tenant_id, audit, at_ms=at_ms)
                await conn.commit()
                return True
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    async def delete(
        self, tenant_id: TenantId, task_id: str, *, audit: AuditEvent, at_ms: int
    ) -> bool:
        scope = TenantScope(tenant_id)
        try:
            async with self._db.connect(scope) as conn:
                gone = await conn.execute(
                    delete(tasks).where(tasks.c.tenant_id == tenant_id, tasks.c.id == task_id)
                )
                if not gone.rowcount:
                    return False
                trail = SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)
                await trail.append(tenant_id, audit, at_ms=at_ms)
                await conn.commit()
                return True
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc
