"""Tasks on SQL."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from adapters.scope import TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database, log_driver_error
from adapters.sqla.tables import tasks
from application.errors import ServiceUnavailable
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus


class SqlaTaskRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, task: Task, *, audit: AuditEvent) -> None:
        scope = TenantScope(task.tenant_id)
        try:
            async with self._db.begin(scope) as conn:
                await conn.execute(
                    insert(tasks).values(
                        tenant_id=task.tenant_id,
                        id=task.id,
                        title=task.title,
                        notes=task.notes,
                        due=task.due,
                        status=task.status.value,
                        created_by=task.created_by,
                        created_at_ms=task.created_at_ms,
                    )
                )
                trail = SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)
                await trail.append(task.tenant_id, audit, at_ms=task.created_at_ms)
        except SQLAlchemyError as exc:
            log_driver_error("tasks are unavailable", exc)
            raise ServiceUnavailable("tasks are unavailable") from exc

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]:
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                rows = await conn.execute(
                    select(tasks)
                    .where(tasks.c.tenant_id == tenant_id, tasks.c.status == TaskStatus.OPEN.value)
                    .order_by(tasks.c.created_at_ms.desc(), tasks.c.id)
                    .limit(limit)
                )
                return [
                    Task(
                        id=r.id,
                        tenant_id=TenantId(r.tenant_id),
                        title=r.title,
                        notes=r.notes,
                        due=r.due,
                        status=TaskStatus(r.status),
                        created_by=r.created_by,
                        created_at_ms=r.created_at_ms,
                    )
                    for r in rows
                ]
        except SQLAlchemyError as exc:
            log_driver_error("tasks are unavailable", exc)
            raise ServiceUnavailable("tasks are unavailable") from exc
