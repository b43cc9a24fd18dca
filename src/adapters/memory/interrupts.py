"""In-memory interrupts: the test double of the SQL store, auditing through a unit of work."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from adapters.memory.persistence import MemoryUnitOfWork
from application.errors import TenantScopeViolation
from application.ports import UnitOfWork
from domain.audit.events import interrupt_opened, interrupt_resolved
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import TenantId, ThreadId


class MemoryInterruptStore:
    """Audit entries go to ``uow``'s trail (a private one by default); an interrupt changes
    only once its entries are appended, and the two commit together."""

    def __init__(self, uow: UnitOfWork | None = None) -> None:
        self._items: dict[tuple[TenantId, str], Interrupt] = {}
        self._uow: UnitOfWork = uow if uow is not None else MemoryUnitOfWork()

    async def add(self, interrupts: Sequence[Interrupt], *, actor: str, at_ms: int) -> None:
        if not interrupts:
            return
        tenant = interrupts[0].tenant_id
        if any(i.tenant_id != tenant for i in interrupts):
            raise TenantScopeViolation("interrupts of several tenants in one call")
        async with self._uow.transaction(tenant) as tx:
            for i in interrupts:
                await tx.audit.append(tenant, interrupt_opened(i, actor=actor), at_ms=at_ms)
            for i in interrupts:
                self._items[(i.tenant_id, i.id)] = i
            await tx.commit()

    async def pending(self, tenant_id: TenantId, thread_id: ThreadId) -> list[Interrupt]:
        return [
            i
            for (t, _), i in self._items.items()
            if t == tenant_id and i.thread_id == thread_id and i.status is InterruptStatus.PENDING
        ]

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
        closing = [
            item
            for id_ in dict.fromkeys(ids)
            if (item := self._items.get((tenant_id, id_))) is not None
            and item.status is InterruptStatus.PENDING
        ]
        if not closing:
            return
        async with self._uow.transaction(tenant_id) as tx:
            for item in closing:
                event = interrupt_resolved(item, status, actor=actor)
                await tx.audit.append(tenant_id, event, at_ms=at_ms)
            for item in closing:
                self._items[(tenant_id, item.id)] = dataclasses.replace(item, status=status)
            await tx.commit()
