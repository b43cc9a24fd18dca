"""Interrupts on SQL."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from adapters.scope import TenantScope
from adapters.sqla.scope import Database
from adapters.sqla.tables import interrupts
from application.errors import ServiceUnavailable, TenantScopeViolation
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import RunId, TenantId, ThreadId


class SqlaInterruptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, items: Sequence[Interrupt]) -> None:
        if not items:
            return
        tenant = items[0].tenant_id
        if any(i.tenant_id != tenant for i in items):
            raise TenantScopeViolation("interrupts of several tenants in one call")
        try:
            async with self._db.begin(TenantScope(tenant)) as conn:
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
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"interrupts are unavailable: {exc}") from exc

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
                return [
                    Interrupt(
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
                    for r in rows
                ]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"interrupts are unavailable: {exc}") from exc

    async def close(self, tenant_id: TenantId, ids: Sequence[str], status: InterruptStatus) -> None:
        if not ids:
            return
        try:
            async with self._db.begin(TenantScope(tenant_id)) as conn:
                await conn.execute(
                    update(interrupts)
                    .where(
                        interrupts.c.tenant_id == tenant_id,
                        interrupts.c.id.in_(list(ids)),
                        interrupts.c.status == InterruptStatus.PENDING.value,
                    )
                    .values(status=status.value)
                )
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"interrupts are unavailable: {exc}") from exc
