"""Conversation use cases: start a run, carry it out, tail its events, read a thread."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from application.conversation.ports import (
    ChatModel,
    ChatRequest,
    EventBatch,
    RunAssignment,
    RunEventLog,
    RunJournal,
    RunLauncher,
    TextChunk,
    UsageChunk,
)
from application.errors import ApplicationError, Conflict, Forbidden, InvalidInput, NotFound
from application.ports import Clock, UnitOfWork
from domain.conversation.events import (
    RunEvent,
    RunFailed,
    RunFinished,
    RunStarted,
    TextDelta,
    TextMessageEnded,
    TextMessageStarted,
)
from domain.conversation.model import Message, Role, Run, Thread, Usage
from domain.errors import DomainError
from domain.ids import MessageId, RunId, ThreadId, new_id
from domain.tenancy.model import Principal

KNOWN_AGENTS = frozenset({"assistant"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRunCommand:
    principal: Principal
    agent: str
    thread_id: str
    run_id: str
    messages: Sequence[Message]
    forwarded_props: Mapping[str, Any]


class StartRun:
    """Records the run (with its thread and the client's new messages), logs RUN_STARTED and
    hands the run to the launcher. Returns once the start is durable; the run goes on alone."""

    def __init__(
        self, journal: RunJournal, events: RunEventLog, launcher: RunLauncher, clock: Clock
    ) -> None:
        self._journal = journal
        self._events = events
        self._launcher = launcher
        self._clock = clock

    async def __call__(self, cmd: StartRunCommand) -> Run:
        principal = cmd.principal
        if not principal.can_write:
            raise Forbidden("a read-only principal cannot start runs")
        if cmd.agent not in KNOWN_AGENTS:
            raise NotFound(f"no agent named {cmd.agent!r}")
        if not any(m.role is Role.USER for m in cmd.messages):
            raise InvalidInput("a run needs at least one user message")
        try:
            run = Run(
                id=RunId(cmd.run_id),
                tenant_id=principal.tenant_id,
                thread_id=ThreadId(cmd.thread_id),
                agent=cmd.agent,
                created_at_ms=self._clock.now_ms(),
            )
            Thread(id=run.thread_id, tenant_id=run.tenant_id, created_at_ms=run.created_at_ms)
        except DomainError as exc:
            raise InvalidInput(exc.message) from exc
        await self._journal.record_start(run, cmd.messages)
        await self._events.open(principal.tenant_id, run.id)
        await self._events.append(
            principal.tenant_id, run.id, (RunStarted(thread_id=run.thread_id, run_id=run.id),)
        )
        self._launcher.launch(
            RunAssignment(
                tenant_id=principal.tenant_id,
                thread_id=run.thread_id,
                run_id=run.id,
                agent=cmd.agent,
                created_at_ms=run.created_at_ms,
                messages=tuple(cmd.messages),
                forwarded_props=cmd.forwarded_props,
            )
        )
        return run


class ExecuteRun:
    """Carries a run out: streams the model into the event log, then records the outcome
    durably before logging the terminal event, so that a client that saw RUN_FINISHED can read
    the answer back."""

    def __init__(
        self, journal: RunJournal, events: RunEventLog, model: ChatModel, clock: Clock
    ) -> None:
        self._journal = journal
        self._events = events
        self._model = model
        self._clock = clock

    async def __call__(self, job: RunAssignment) -> None:
        run = Run(
            id=job.run_id,
            tenant_id=job.tenant_id,
            thread_id=job.thread_id,
            agent=job.agent,
            created_at_ms=job.created_at_ms,
        )
        run.start()
        message_id = MessageId(new_id("msg"))
        parts: list[str] = []
        usage = Usage()
        started = False
        outcome: RunEvent
        log = self._events
        run_id = job.run_id
        tenant_id = job.tenant_id
        try:
            request = ChatRequest(
                tenant_id=job.tenant_id, messages=job.messages, forwarded_props=job.forwarded_props
            )
            # Each chunk is appended as it comes: readers wake once per loop turn and take
            # everything appended since, so a fast model's tokens leave in few large writes
            # while a slow model's leave one by one.
            async for chunk in self._model.stream(request):
                if isinstance(chunk, TextChunk):
                    if not chunk.delta:
                        continue
                    if not started:
                        started = True
                        await log.append(
                            tenant_id, run_id, (TextMessageStarted(message_id=message_id),)
                        )
                    parts.append(chunk.delta)
                    await log.append(tenant_id, run_id, (TextDelta(message_id, chunk.delta),))
                elif isinstance(chunk, UsageChunk):
                    usage = usage + chunk.usage
            if started:
                await log.append(tenant_id, run_id, (TextMessageEnded(message_id=message_id),))
            now = self._clock.now_ms()
            answer = "".join(parts)
            reply = (
                Message(id=message_id, role=Role.ASSISTANT, content=answer, created_at_ms=now)
                if answer
                else None
            )
            # Succeed a copy: if recording the success fails, the run itself is still running
            # and can fail properly.
            succeeded = copy.copy(run)
            succeeded.succeed(usage=usage, at_ms=now)
            await self._journal.record_end(succeeded, (reply,) if reply else ())
            outcome = RunFinished(thread_id=job.thread_id, run_id=job.run_id, usage=usage)
        except asyncio.CancelledError:
            run.cancel(at_ms=self._clock.now_ms(), usage=usage)
            await self._record_failure(run)
            await log.append(
                tenant_id, run_id, (RunFailed(code="cancelled", message="the run was cancelled"),)
            )
            raise
        except ApplicationError as exc:
            run.fail(code=exc.code, message=exc.message, usage=usage, at_ms=self._clock.now_ms())
            await self._record_failure(run)
            outcome = RunFailed(code=exc.code, message=exc.message)
        except Exception:  # a bug: the run must still end cleanly for its client
            run.fail(
                code="internal_error",
                message="the run failed unexpectedly",
                usage=usage,
                at_ms=self._clock.now_ms(),
            )
            await self._record_failure(run)
            await log.append(
                tenant_id,
                run_id,
                (RunFailed(code="internal_error", message="the run failed unexpectedly"),),
            )
            raise
        await log.append(tenant_id, run_id, (outcome,))

    async def _record_failure(self, run: Run) -> None:
        try:
            await self._journal.record_end(run, ())
        except ApplicationError:
            # The database is down too: the client still gets its RUN_ERROR from the log.
            return


class TailRun:
    """Reads a run's events for a (re)connecting client of the run's own tenant."""

    def __init__(self, events: RunEventLog) -> None:
        self._events = events

    async def __call__(
        self, principal: Principal, run_id: str, *, after: int, wait_s: float
    ) -> EventBatch:
        batch = await self._events.read(
            principal.tenant_id, RunId(run_id), after=after, wait_s=wait_s
        )
        if batch is None:
            raise NotFound(f"no live events for run {run_id}")
        return batch


class CancelRun:
    def __init__(self, uow: UnitOfWork, launcher: RunLauncher) -> None:
        self._uow = uow
        self._launcher = launcher

    async def __call__(self, principal: Principal, run_id: str) -> Run:
        if not principal.can_write:
            raise Forbidden("a read-only principal cannot cancel runs")
        async with self._uow.transaction(principal.tenant_id) as tx:
            run = await tx.runs.get(principal.tenant_id, RunId(run_id))
        if run is None:
            raise NotFound(f"no run {run_id}")
        if run.status.is_terminal:
            raise Conflict(f"run {run_id} has already ended ({run.status})")
        if not self._launcher.cancel(principal.tenant_id, run.id):
            raise Conflict(f"run {run_id} is not executing on this instance")
        return run


class GetThreadMessages:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, thread_id: str) -> list[Message]:
        async with self._uow.transaction(principal.tenant_id) as tx:
            thread = await tx.threads.get(principal.tenant_id, ThreadId(thread_id))
            if thread is None:
                raise NotFound(f"no thread {thread_id}")
            return await tx.threads.list_messages(principal.tenant_id, ThreadId(thread_id))


class GetRun:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, run_id: str) -> Run:
        async with self._uow.transaction(principal.tenant_id) as tx:
            run = await tx.runs.get(principal.tenant_id, RunId(run_id))
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run
