from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.ids import TenantId, ThreadId


class MemoryInterruptStore:
    def __init__(self) -> None:
        self._items: dict[tuple[TenantId, str], Interrupt] = {}

    async def add(self, interrupts: Sequence[Interrupt]) -> None:
        for i in interrupts:
            self._items[(i.tenant_id, i.id)] = i

    async def pending(self, tenant_id: TenantId, thread_id: ThreadId) -> list[Interrupt]:
        return [
            i
            for (t, _), i in self._items.items()
            if t == tenant_id and i.thread_id == thread_id and i.status is InterruptStatus.PENDING
        ]

    async def close(self, tenant_id: TenantId, ids: Sequence[str], status: InterruptStatus) -> None:
        for id_ in ids:
            item = self._items.get((tenant_id, id_))
            if item is not None and item.status is InterruptStatus.PENDING:
                self._items[(tenant_id, id_)] = dataclasses.replace(item, status=status)
