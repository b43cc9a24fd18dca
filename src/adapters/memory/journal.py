"""A run journal over any unit of work: one short transaction per record."""

from __future__ import annotations

from collections.abc import Sequence

from application.errors import Conflict, NotFound
from application.ports import UnitOfWork
from domain.audit.events import run_finished, run_started, tool_called
from domain.conversation.model import Message, Run, Thread
from domain.tools.model import ToolInvocation


class TransactionalRunJournal:
    """Correct on every unit of work, but pays a transaction per record; the SQLite journal
    groups records into shared commits instead."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        async with self._uow.transaction(run.tenant_id) as tx:
            if await tx.runs.get(run.tenant_id, run.id) is not None:
                raise Conflict(f"run {run.id} already exists")
            if await tx.threads.get(run.tenant_id, run.thread_id) is None:
                await tx.threads.add(
                    Thread(
                        id=run.thread_id, tenant_id=run.tenant_id, created_at_ms=run.created_at_ms
                    )
                )
            await tx.threads.add_messages(run.tenant_id, run.thread_id, messages)
            await tx.runs.add(run)
            await tx.audit.append(
                run.tenant_id, run_started(run, len(messages)), at_ms=run.created_at_ms
            )
            await tx.commit()

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        async with self._uow.transaction(run.tenant_id) as tx:
            stored = await tx.runs.get(run.tenant_id, run.id)
            if stored is None:
                raise NotFound(f"run {run.id} was never recorded")
            if stored.status.is_terminal:
                return
            await tx.threads.add_messages(run.tenant_id, run.thread_id, replies)
            await tx.runs.save(run)
            for call in tool_calls:
                await tx.audit.append(run.tenant_id, tool_called(run, call), at_ms=call.at_ms)
            await tx.audit.append(
                run.tenant_id, run_finished(run), at_ms=run.finished_at_ms or run.created_at_ms
            )
            await tx.commit()
