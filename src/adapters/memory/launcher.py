"""Runs assignments as asyncio tasks in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from application.conversation.ports import RunAssignment
from domain.ids import RunId

log = logging.getLogger("sba.runs")


class AsyncioRunLauncher:
    """Keeps a strong reference to every running task (the loop holds only weak ones) and can
    drain them on shutdown: runs still going after the grace period are cancelled, which ends
    them with a clean ``cancelled`` outcome."""

    def __init__(self, execute: Callable[[RunAssignment], Coroutine[Any, Any, None]]) -> None:
        self._execute = execute
        self._tasks: dict[RunId, asyncio.Task[None]] = {}

    def launch(self, assignment: RunAssignment) -> None:
        run_id = assignment.run_id
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._execute(assignment))
        self._tasks[run_id] = task
        task.add_done_callback(lambda t: self._done(run_id, t))

    def _done(self, run_id: RunId, task: asyncio.Task[None]) -> None:
        self._tasks.pop(run_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run %s crashed", run_id, exc_info=exc)

    def cancel(self, run_id: RunId) -> bool:
        task = self._tasks.get(run_id)
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
