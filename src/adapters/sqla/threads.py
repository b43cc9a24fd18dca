"""The thread catalog on SQL: summaries computed per page (a title from the first user message,
run count, last activity), renames and deletions with their audit entries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.scope import TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database, log_driver_error
from adapters.sqla.tables import deleted_run_usage, interrupts, messages, runs, threads
from application.errors import Conflict, ServiceUnavailable
from domain.audit.events import thread_deleted, thread_renamed
from domain.conversation.model import Role
from domain.conversation.threads import ThreadRemoval, ThreadSummary, derived_title
from domain.ids import TenantId, ThreadId

UNAVAILABLE = "threads are unavailable"
# Enough of the first user message to derive a title from, without reading all of it.
_TITLE_SOURCE = 400


def _summaries(tenant_id: TenantId) -> Any:
    t = threads.c
    first_user = (
        select(func.substr(messages.c.content, 1, _TITLE_SOURCE))
        .where(
            messages.c.tenant_id == t.tenant_id,
            messages.c.thread_id == t.id,
            messages.c.role == Role.USER.value,
        )
        .order_by(messages.c.position)
        .limit(1)
        .scalar_subquery()
    )
    of_thread = (runs.c.tenant_id == t.tenant_id, runs.c.thread_id == t.id)
    run_count = select(func.count()).where(*of_thread).scalar_subquery()
    last_run = (
        select(func.max(func.coalesce(runs.c.finished_at_ms, runs.c.created_at_ms)))
        .where(*of_thread)
        .scalar_subquery()
    )
    return select(
        t.id,
        t.created_at_ms,
        t.title,
        first_user.label("first_user"),
        run_count.label("run_count"),
        last_run.label("last_run"),
    ).where(t.tenant_id == tenant_id)


def _summary(r: Any) -> ThreadSummary:
    return ThreadSummary(
        id=ThreadId(r.id),
        title=r.title if r.title is not None else derived_title(r.first_user),
        named=r.title is not None,
        run_count=int(r.run_count or 0),
        created_at_ms=r.created_at_ms,
        last_activity_ms=max(r.created_at_ms, r.last_run or 0),
    )


class SqlaThreadCatalog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self, tenant_id: TenantId, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[ThreadSummary]:
        t = threads.c
        query = _summaries(tenant_id)
        if after is not None:
            query = query.where(
                or_(
                    t.created_at_ms < after[0],
                    and_(t.created_at_ms == after[0], t.id < after[1]),
                )
            )
        query = query.order_by(t.created_at_ms.desc(), t.id.desc()).limit(limit)
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                return [_summary(r) for r in await conn.execute(query)]
        except SQLAlchemyError as exc:
            log_driver_error(UNAVAILABLE, exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def summary(self, tenant_id: TenantId, thread_id: ThreadId) -> ThreadSummary | None:
        try:
            async with self._db.connect(TenantScope(tenant_id)) as conn:
                return await self._one(conn, tenant_id, thread_id)
        except SQLAlchemyError as exc:
            log_driver_error(UNAVAILABLE, exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def _one(
        self, conn: AsyncConnection, tenant_id: TenantId, thread_id: ThreadId
    ) -> ThreadSummary | None:
        row = (await conn.execute(_summaries(tenant_id).where(threads.c.id == thread_id))).first()
        return None if row is None else _summary(row)

    def _trail(self, conn: AsyncConnection, scope: TenantScope) -> SqlaAuditTrail:
        return SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)

    async def rename(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        title: str | None,
        *,
        actor: str,
        at_ms: int,
    ) -> ThreadSummary | None:
        scope = TenantScope(tenant_id)
        try:
            async with self._db.connect(scope) as conn:
                changed = await conn.execute(
                    update(threads)
                    .where(threads.c.tenant_id == tenant_id, threads.c.id == thread_id)
                    .values(title=title)
                )
                if not changed.rowcount:
                    return None
                event = thread_renamed(thread_id, actor=actor, cleared=title is None)
                await self._trail(conn, scope).append(tenant_id, event, at_ms=at_ms)
                renamed = await self._one(conn, tenant_id, thread_id)
                await conn.commit()
                return renamed
        except SQLAlchemyError as exc:
            log_driver_error(UNAVAILABLE, exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def delete(
        self, tenant_id: TenantId, thread_id: ThreadId, *, actor: str, at_ms: int
    ) -> ThreadRemoval | None:
        scope = TenantScope(tenant_id)
        r, m, i = runs.c, messages.c, interrupts.c
        try:
            async with self._db.connect(scope) as conn:
                # Locks the thread's row (Postgres), so a run start recorded meanwhile waits
                # for this deletion and then creates the thread anew.
                lock = select(threads.c.id).where(
                    threads.c.tenant_id == tenant_id, threads.c.id == thread_id
                )
                if self._db.is_postgres:
                    lock = lock.with_for_update()
                if (await conn.execute(lock)).first() is None:
                    return None
                of_thread = (r.tenant_id == tenant_id, r.thread_id == thread_id)
                busy = (
                    await conn.execute(
                        select(func.count()).where(*of_thread, r.status.in_(("pending", "running")))
                    )
                ).scalar_one()
                if busy:
                    raise Conflict(
                        f"thread {thread_id} has a run in progress: cancel it or let it end, "
                        "then delete the thread",
                        code="thread_busy",
                    )
                await conn.execute(
                    insert(deleted_run_usage).from_select(
                        [
                            "tenant_id",
                            "run_id",
                            "created_at_ms",
                            "model",
                            "input_tokens",
                            "output_tokens",
                        ],
                        select(
                            r.tenant_id,
                            r.id,
                            r.created_at_ms,
                            r.model,
                            r.input_tokens,
                            r.output_tokens,
                        ).where(*of_thread),
                    )
                )
                # Children first and by name: no reliance on cascades under row-level security.
                gone_interrupts = await conn.execute(
                    delete(interrupts).where(i.tenant_id == tenant_id, i.thread_id == thread_id)
                )
                gone_messages = await conn.execute(
                    delete(messages).where(m.tenant_id == tenant_id, m.thread_id == thread_id)
                )
                gone_runs = await conn.execute(delete(runs).where(*of_thread))
                await conn.execute(
                    delete(threads).where(
                        threads.c.tenant_id == tenant_id, threads.c.id == thread_id
                    )
                )
                removal = ThreadRemoval(
                    thread_id=thread_id,
                    runs=gone_runs.rowcount,
                    messages=gone_messages.rowcount,
                    interrupts=gone_interrupts.rowcount,
                )
                event = thread_deleted(removal, actor=actor)
                await self._trail(conn, scope).append(tenant_id, event, at_ms=at_ms)
                await conn.commit()
                return removal
        except SQLAlchemyError as exc:
            log_driver_error(UNAVAILABLE, exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc
