"""The thread catalog over the in-memory unit of work (the test double)."""

from __future__ import annotations

from adapters.memory.interrupts import MemoryInterruptStore
from adapters.memory.persistence import MemoryUnitOfWork, _Store
from application.errors import Conflict
from domain.audit.events import thread_deleted, thread_renamed
from domain.conversation.model import Role
from domain.conversation.threads import ThreadRemoval, ThreadSummary, derived_title
from domain.ids import TenantId, ThreadId


def _summary(store: _Store, tenant_id: TenantId, thread_id: ThreadId) -> ThreadSummary | None:
    thread = store.threads.get((tenant_id, thread_id))
    if thread is None:
        return None
    first_user = next(
        (m.content for m in store.messages.get((tenant_id, thread_id), ()) if m.role is Role.USER),
        None,
    )
    mine = [r for (t, _), r in store.runs.items() if t == tenant_id and r.thread_id == thread_id]
    title = store.thread_titles.get((tenant_id, thread_id))
    return ThreadSummary(
        id=thread_id,
        title=title if title is not None else derived_title(first_user),
        named=title is not None,
        run_count=len(mine),
        created_at_ms=thread.created_at_ms,
        last_activity_ms=max(
            [thread.created_at_ms, *(r.finished_at_ms or r.created_at_ms for r in mine)]
        ),
    )


class MemoryThreadCatalog:
    """Reads and changes ``uow``'s store; with ``interrupts``, a deletion drops the thread's
    interrupts there too."""

    def __init__(
        self, uow: MemoryUnitOfWork, interrupts: MemoryInterruptStore | None = None
    ) -> None:
        self._uow = uow
        self._interrupts = interrupts

    async def page(
        self, tenant_id: TenantId, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ThreadSummary]:
        store = self._uow._store
        keys = sorted(
            ((th.created_at_ms, th.id) for (t, _), th in store.threads.items() if t == tenant_id),
            reverse=True,
        )
        if after is not None:
            keys = [k for k in keys if k < after]
        found = [_summary(store, tenant_id, ThreadId(i)) for _, i in keys[:limit]]
        return [s for s in found if s is not None]

    async def summary(self, tenant_id: TenantId, thread_id: ThreadId) -> ThreadSummary | None:
        return _summary(self._uow._store, tenant_id, thread_id)

    async def rename(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        title: str | None,
        *,
        actor: str,
        at_ms: int,
    ) -> ThreadSummary | None:
        async with self._uow.transaction(tenant_id) as tx:
            staged = tx._staged
            if (tenant_id, thread_id) not in staged.threads:
                return None
            if title is None:
                staged.thread_titles.pop((tenant_id, thread_id), None)
            else:
                staged.thread_titles[(tenant_id, thread_id)] = title
            event = thread_renamed(thread_id, actor=actor, cleared=title is None)
            await tx.audit.append(tenant_id, event, at_ms=at_ms)
            await tx.commit()
            return _summary(staged, tenant_id, thread_id)

    async def delete(
        self, tenant_id: TenantId, thread_id: ThreadId, *, actor: str, at_ms: int
    ) -> ThreadRemoval | None:
        async with self._uow.transaction(tenant_id) as tx:
            staged = tx._staged
            key = (tenant_id, thread_id)
            if key not in staged.threads:
                return None
            mine = {
                k: r
                for k, r in staged.runs.items()
                if k[0] == tenant_id and r.thread_id == thread_id
            }
            if any(not r.status.is_terminal for r in mine.values()):
                raise Conflict(
                    f"thread {thread_id} has a run in progress: cancel it or let it end, "
                    "then delete the thread",
                    code="thread_busy",
                )
            items = self._interrupts._items if self._interrupts is not None else {}
            asked = [k for k, i in items.items() if k[0] == tenant_id and i.thread_id == thread_id]
            for run_key, run in mine.items():
                staged.deleted_runs[run_key] = run
                del staged.runs[run_key]
            messages = staged.messages.pop(key, [])
            staged.thread_titles.pop(key, None)
            del staged.threads[key]
            removal = ThreadRemoval(
                thread_id=thread_id, runs=len(mine), messages=len(messages), interrupts=len(asked)
            )
            await tx.audit.append(tenant_id, thread_deleted(removal, actor=actor), at_ms=at_ms)
            await tx.commit()
            for interrupt_key in asked:
                del items[interrupt_key]
            return removal
