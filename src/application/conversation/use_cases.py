"""Conversation use cases: start a run, carry it out, tail its events, read a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from application.conversation.ports import (
    ChatModel,
    ChatRequest,
    EventBatch,
    RunAssignment,
    RunEventLog,
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
    """Persists the thread and the client's new messages, records the run, logs RUN_STARTED and
    hands the run to the launcher. Returns once the start is durable; the run goes on alone."""

    def __init__(
        self, uow: UnitOfWork, events: RunEventLog, launcher: RunLauncher, clock: Clock
    ) -> None:
        self._uow = uow
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
        now = self._clock.now_ms()
        try:
            thread_id = ThreadId(cmd.thread_id)
            run = Run(
                id=RunId(cmd.run_id),
                tenant_id=principal.tenant_id,
                thread_id=thread_id,
                agent=cmd.agent,
                created_at_ms=now,
            )
            new_thread = Thread(id=thread_id, tenant_id=principal.tenant_id, created_at_ms=now)
        except DomainError as exc:
            raise InvalidInput(exc.message) from exc
        async with self._uow.transaction(principal.tenant_id) as tx:
            if await tx.threads.get(principal.tenant_id, thread_id) is None:
                await tx.threads.add(new_thread)
            if await tx.runs.get(principal.tenant_id, run.id) is not None:
                raise Conflict(f"run {run.id} already exists")
            await tx.threads.add_messages(principal.tenant_id, thread_id, cmd.messages)
            await tx.runs.add(run)
            await tx.commit()
        await self._events.open(principal.tenant_id, run.id)
        await self._events.append(run.id, (RunStarted(thread_id=thread_id, run_id=run.id),))
        self._launcher.launch(
            RunAssignment(
                tenant_id=principal.tenant_id,
                thread_id=thread_id,
                run_id=run.id,
                agent=cmd.agent,
                messages=tuple(cmd.messages),
                forwarded_props=cmd.forwarded_props,
            )
        )
        return run


class ExecuteRun:
    """Carries a run out: streams the model into the event log, then persists the outcome in
    its own short transaction before logging the terminal event, so that a client that saw
    RUN_FINISHED can read the answer back."""

    def __init__(
        self, uow: UnitOfWork, events: RunEventLog, model: ChatModel, clock: Clock
    ) -> None:
        self._uow = uow
        self._events = events
        self._model = model
        self._clock = clock

    async def __call__(self, job: RunAssignment) -> None:
        message_id = MessageId(new_id("msg"))
        parts: list[str] = []
        usage = Usage()
        started = False
        outcome: RunEvent
        log = self._events
        run_id = job.run_id
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
                        await log.append(run_id, (TextMessageStarted(message_id=message_id),))
                    parts.append(chunk.delta)
                    await log.append(run_id, (TextDelta(message_id, chunk.delta),))
                elif isinstance(chunk, UsageChunk):
                    usage = usage + chunk.usage
            if started:
                await log.append(run_id, (TextMessageEnded(message_id=message_id),))
            answer = "".join(parts)
            await self._finish(job, message_id, answer, usage)
            outcome = RunFinished(thread_id=job.thread_id, run_id=job.run_id, usage=usage)
        except asyncio.CancelledError:
            await self._fail(job, "cancelled", "the run was cancelled", usage, cancelled=True)
            await self._events.append(
                job.run_id, (RunFailed(code="cancelled", message="the run was cancelled"),)
            )
            raise
        except ApplicationError as exc:
            await self._fail(job, exc.code, exc.message, usage)
            outcome = RunFailed(code=exc.code, message=exc.message)
        except Exception as exc:  # a bug: the run must still end cleanly for its client
            await self._fail(job, "internal_error", "the run failed unexpectedly", usage)
            outcome = RunFailed(code="internal_error", message="the run failed unexpectedly")
            await self._events.append(job.run_id, (outcome,))
            raise exc
        await self._events.append(job.run_id, (outcome,))

    async def _finish(
        self, job: RunAssignment, message_id: MessageId, answer: str, usage: Usage
    ) -> None:
        now = self._clock.now_ms()
        async with self._uow.transaction(job.tenant_id) as tx:
            run = await tx.runs.get(job.tenant_id, job.run_id)
            if run is None:
                raise NotFound(f"run {job.run_id} vanished")
            run.start()
            run.succeed(usage=usage, at_ms=now)
            if answer:
                reply = Message(
                    id=message_id, role=Role.ASSISTANT, content=answer, created_at_ms=now
                )
                await tx.threads.add_messages(job.tenant_id, job.thread_id, (reply,))
            await tx.runs.save(run)
            await tx.commit()

    async def _fail(
        self,
        job: RunAssignment,
        code: str,
        message: str,
        usage: Usage,
        *,
        cancelled: bool = False,
    ) -> None:
        now = self._clock.now_ms()
        try:
            async with self._uow.transaction(job.tenant_id) as tx:
                run = await tx.runs.get(job.tenant_id, job.run_id)
                if run is None or run.status.is_terminal:
                    return
                if cancelled:
                    run.cancel(at_ms=now, usage=usage)
                else:
                    run.fail(code=code, message=message, usage=usage, at_ms=now)
                await tx.runs.save(run)
                await tx.commit()
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
        if not self._launcher.cancel(run.id):
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
