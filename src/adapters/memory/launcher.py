"""Runs assignments as asyncio tasks in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from application.conversation.ports import RunAssignment
from domain.ids import RunId, TenantId

log = logging.getLogger("sba.runs")


class AsyncioRunLauncher:
    """Keeps a strong reference to every running task (the loop holds only weak ones) and can
    drain them on shutdown: runs still going after the grace period are cancelled, which ends
    them with a clean ``cancelled`` outcome."""

    def __init__(self, execute: Callable[[RunAssignment], Coroutine[Any, Any, None]]) -> None:
        self._execute = execute
        self._tasks: dict[tuple[TenantId, RunId], asyncio.Task[None]] = {}

    def launch(self, assignment: RunAssignment) -> None:
        key = (assignment.tenant_id, assignment.run_id)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._execute(assignment))
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: tuple[TenantId, RunId], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run %s crashed", key[1], exc_info=exc)

    def cancel(self, tenant_id: TenantId, run_id: RunId) -> bool:
        """Runs are told apart by tenant and id: a tenant can only ever cancel its own."""
        task = self._tasks.get((tenant_id, run_id))
        if task is None or task.done():
            return False
        task.cancel()
        return True

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
