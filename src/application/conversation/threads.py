"""Threads as resources: listed newest first, read, renamed, deleted with their runs and
messages. Every change is on the tenant's audit trail, in the change's own transaction."""

from __future__ import annotations

from typing import Protocol

from application.authz import authorize
from application.errors import InvalidInput, NotFound
from application.pagination import Page, check_limit, decode_cursor, page_of
from application.ports import Clock
from domain.conversation.threads import ThreadRemoval, ThreadSummary, thread_title
from domain.errors import DomainError
from domain.ids import TenantId, ThreadId
from domain.tenancy.model import Principal, Scope


class ThreadCatalog(Protocol):
    """A tenant's threads with their summaries, always within one tenant. ``page`` lists them
    newest first by creation (then id, both descending), strictly after ``after`` (a creation
    time and an id) when given. ``rename`` and ``delete`` append their audit entry
    (``thread.renamed``, ``thread.deleted``) by ``actor`` at ``at_ms`` in the transaction of
    the change, and return None (changing nothing) when the tenant holds no such thread.
    ``delete`` removes the thread's messages, runs and interrupts; the usage its runs consumed
    stays counted by the usage ledger. It raises ``Conflict`` (``thread_busy``) while a run of
    the thread is pending or running."""

    async def page(
        self, tenant_id: TenantId, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ThreadSummary]: ...

    async def summary(self, tenant_id: TenantId, thread_id: ThreadId) -> ThreadSummary | None: ...

    async def rename(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        title: str | None,
        *,
        actor: str,
        at_ms: int,
    ) -> ThreadSummary | None:
        """``title`` None: the thread goes back to the title derived from its messages."""
        ...

    async def delete(
        self, tenant_id: TenantId, thread_id: ThreadId, *, actor: str, at_ms: int
    ) -> ThreadRemoval | None: ...


def _key(s: ThreadSummary) -> tuple[int, str]:
    return (s.created_at_ms, s.id)


class ListThreads:
    def __init__(self, catalog: ThreadCatalog) -> None:
        self._catalog = catalog

    async def __call__(
        self, principal: Principal, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[ThreadSummary]:
        authorize(principal, Scope.THREADS_READ, write=False, action="list threads")
        size = check_limit(limit)
        after = None
        if cursor is not None:
            at_ms, thread_id = decode_cursor(cursor, (int, str))
            after = (int(at_ms), str(thread_id))
        found = await self._catalog.page(principal.tenant_id, limit=size + 1, after=after)
        return page_of(found, size, _key)


class GetThread:
    def __init__(self, catalog: ThreadCatalog) -> None:
        self._catalog = catalog

    async def __call__(self, principal: Principal, thread_id: str) -> ThreadSummary:
        authorize(principal, Scope.THREADS_READ, write=False, action="read threads")
        found = await self._catalog.summary(principal.tenant_id, ThreadId(thread_id))
        if found is None:
            raise NotFound(f"no thread {thread_id}")
        return found


class RenameThread:
    def __init__(self, catalog: ThreadCatalog, clock: Clock) -> None:
        self._catalog = catalog
        self._clock = clock

    async def __call__(
        self, principal: Principal, thread_id: str, title: str | None
    ) -> ThreadSummary:
        authorize(principal, Scope.THREADS_WRITE, write=True, action="rename threads")
        try:
            cleaned = None if title is None else thread_title(title)
        except DomainError as exc:
            raise InvalidInput(exc.message, code="validation_failed") from exc
        renamed = await self._catalog.rename(
            principal.tenant_id,
            ThreadId(thread_id),
            cleaned,
            actor=principal.subject,
            at_ms=self._clock.now_ms(),
        )
        if renamed is None:
            raise NotFound(f"no thread {thread_id}")
        return renamed


class DeleteThread:
    def __init__(self, catalog: ThreadCatalog, clock: Clock) -> None:
        self._catalog = catalog
        self._clock = clock

    async def __call__(self, principal: Principal, thread_id: str) -> ThreadRemoval:
        authorize(principal, Scope.THREADS_WRITE, write=True, action="delete threads")
        removed = await self._catalog.delete(
            principal.tenant_id,
            ThreadId(thread_id),
            actor=principal.subject,
            at_ms=self._clock.now_ms(),
        )
        if removed is None:
            raise NotFound(f"no thread {thread_id}")
        return removed
