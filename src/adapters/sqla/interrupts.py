"""Interrupts on SQL. Opening and closing them appends their audit entries in the same
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.scope import TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database, log_driver_error
from adapters.sqla.tables import interrupts
from application.errors import ServiceUnavailable, TenantScopeViolation
from domain.audit.events import interrupt_opened, interrupt_resolved
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import RunId, TenantId, ThreadId


class SqlaInterruptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _trail(self, conn: AsyncConnection, scope: TenantScope) -> SqlaAuditTrail:
        return SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)

    async def add(self, items: Sequence[Interrupt], *, actor: str, at_ms: int) -> None:
        if not items:
            return
        tenant = items[0].tenant_id
        if any(i.tenant_id != tenant for i in items):
            raise TenantScopeViolation("interrupts of several tenants in one call")
        scope = TenantScope(tenant)
        try:
            async with self._db.begin(scope) as conn:
                await conn.execute(
                    insert(interrupts),
                    [
                        {
                            "tenant_id": i.tenant_id,
                            "id": i.id,
                            "thread_id": i.thread_id,
                            "run_id": i.run_id,
                            "tool_call_id": i.tool_call_id,
                            "tool_name": i.tool_name,
                            "arguments": i.arguments,
                            "reason": i.reason,
                            "message": i.message,
                            "expires_at_ms": i.expires_at_ms,
                            "status": i.status.value,
                        }
                        for i in items
                    ],
                )
                trail = self._trail(conn, scope)
                for i in items:
                    await trail.append(tenant, interrupt_opened(i, actor=actor), at_ms=at_ms)
        except SQLAlchemyError as exc:
            log_driver_error("interrupts are unavailable", exc)
            raise ServiceUnavailable("interrupts are unavailable") from exc

    async def pending(self, tenant_id: TenantId, thread_id: ThreadId) -> list[Interrupt]:
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                rows = await conn.execute(
                    select(interrupts)
                    .where(
                        interrupts.c.tenant_id == tenant_id,
                        interrupts.c.thread_id == thread_id,
                        interrupts.c.status == InterruptStatus.PENDING.value,
                    )
                    .order_by(interrupts.c.id)
                )
                return [_interrupt(r) for r in rows]
        except SQLAlchemyError as exc:
            log_driver_error("interrupts are unavailable", exc)
            raise ServiceUnavailable("interrupts are unavailable") from exc

    async def close(
        self,
        tenant_id: TenantId,
        ids: Sequence[str],
        status: InterruptStatus,
        *,
        actor: str,
        at_ms: int,
    ) -> None:
        if not ids:
            return
        scope = TenantScope(tenant_id)
        try:
            async with self._db.begin(scope) as conn:
                # Only the interrupts this statement closed are audited: one closed already
                # (a retried start) keeps its first resolution, on the trail once.
                closed = (
                    await conn.execute(
                        update(interrupts)
                        .where(
                            interrupts.c.tenant_id == tenant_id,
                            interrupts.c.id.in_(list(ids)),
                            interrupts.c.status == InterruptStatus.PENDING.value,
                        )
                        .values(status=status.value)
                        .returning(*interrupts.c)
                    )
                ).all()
                trail = self._trail(conn, scope)
                order = {id_: n for n, id_ in enumerate(ids)}
                for r in sorted(closed, key=lambda r: order[r.id]):
                    event = interrupt_resolved(_interrupt(r), status, actor=actor)
                    await trail.append(tenant_id, event, at_ms=at_ms)
        except SQLAlchemyError as exc:
            log_driver_error("interrupts are unavailable", exc)
            raise ServiceUnavailable("interrupts are unavailable") from exc


def _interrupt(r: Any) -> Interrupt:
    return Interrupt(
        id=r.id,
        tenant_id=TenantId(r.tenant_id),
        thread_id=ThreadId(r.thread_id),
        run_id=RunId(r.run_id),
        tool_call_id=r.tool_call_id,
        tool_name=r.tool_name,
        arguments=r.arguments,
        reason=r.reason,
        message=r.message,
        expires_at_ms=r.expires_at_ms,
        status=InterruptStatus(r.status),
    )
