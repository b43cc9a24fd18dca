"""Conversation use cases: start a run, carry it out, tail its events, read a thread."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from application.authz import authorize
from application.conversation.ports import (
    ChatModel,
    ChatRequest,
    EventBatch,
    InterruptStore,
    RunAssignment,
    RunEventLog,
    RunJournal,
    RunLauncher,
    RunLeases,
    TextChunk,
    ToolSpec,
    UsageChunk,
)
from application.conversation.ports import ToolCallDelta as ModelToolCallDelta
from application.conversation.ports import ToolCallEnded as ModelToolCallEnded
from application.conversation.ports import ToolCallStarted as ModelToolCallStarted
from application.errors import (
    ApplicationError,
    Conflict,
    InvalidInput,
    ModelError,
    NotFound,
    ServiceUnavailable,
)
from application.pagination import Page, check_limit, decode_cursor, encode_cursor
from application.ports import Clock, UnitOfWork
from application.quota.ports import RateDecision
from application.quota.use_cases import BudgetGuard, BudgetStatus, RunSlots
from application.tools.ports import ToolContext
from application.tools.use_cases import InvokeTool, ListTools, error_result
from domain.conversation.events import (
    Custom,
    RunEvent,
    RunFailed,
    RunFinished,
    RunStarted,
    StateDelta,
    StateSnapshot,
    StepFinished,
    StepStarted,
    TextDelta,
    TextMessageEnded,
    TextMessageStarted,
    ToolCallArgs,
    ToolCallEnded,
    ToolCallResult,
    ToolCallStarted,
)
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.conversation.model import Message, Role, Run, Thread, ToolCall, Usage
from domain.errors import DomainError
from domain.ids import MessageId, RunId, ThreadId, new_id
from domain.quota.budget import BudgetState
from domain.tenancy.model import Principal, Scope
from domain.tools.model import ToolInvocation, ToolOutcome

KNOWN_AGENTS = frozenset({"assistant"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRunCommand:
    principal: Principal
    agent: str
    thread_id: str
    run_id: str
    messages: Sequence[Message]
    forwarded_props: Mapping[str, Any]
    client_tools: Sequence[ToolSpec] = ()
    state: Mapping[str, Any] = field(default_factory=dict)
    supports_interrupts: bool = False
    # The client's answers to the thread's open interrupts: (interrupt id, resolved?).
    resume: Sequence[tuple[str, bool]] = ()


@dataclass(frozen=True, slots=True)
class RunStart:
    """The run a start request stands for. ``attached``: the run id was already this tenant's
    run on the same thread (a retried request), so nothing new was started."""

    run: Run
    attached: bool = False
    # The tenant's token budget when it has one (its state is ``soft`` past the warning line).
    budget: BudgetStatus | None = None
    # The decision of the run's rate limits, when it is held to any.
    rate: RateDecision | None = None


def _unanswered_tool_calls(messages: Sequence[Message]) -> bool:
    answered = {m.tool_call_id for m in messages if m.role is Role.TOOL}
    return any(c.id not in answered for m in messages for c in m.tool_calls)


class StartRun:
    """Records the run (with its thread and the client's new messages), logs RUN_STARTED and
    hands the run to the launcher. Returns once the start is durable; the run goes on alone.

    A run is held to its rate limits and takes its concurrency places first, in one step (429
    ``rate_limited``, or ``concurrency_limited`` when its tenant or principal is at the cap).
    A run id the tenant already used on the same thread is a retry: the existing run is
    returned, marked attached, and nothing starts twice; on another thread it is a conflict."""

    def __init__(
        self,
        journal: RunJournal,
        events: RunEventLog,
        launcher: RunLauncher,
        clock: Clock,
        interrupts: InterruptStore,
        uow: UnitOfWork,
        slots: RunSlots,
        budget: BudgetGuard,
        leases: RunLeases | None = None,
    ) -> None:
        self._budget = budget
        self._leases = leases
        self._journal = journal
        self._events = events
        self._launcher = launcher
        self._clock = clock
        self._interrupts = interrupts
        self._uow = uow
        self._slots = slots

    async def _answers(self, cmd: StartRunCommand, run: Run) -> tuple[tuple[Interrupt, bool], ...]:
        """Checks the client's answers against the thread's open interrupts. Only a run that
        answers something, or whose history holds an unanswered tool call, pays the look-up."""
        if not cmd.resume and not _unanswered_tool_calls(cmd.messages):
            return ()
        pending = {i.id: i for i in await self._interrupts.pending(run.tenant_id, run.thread_id)}
        answers: list[tuple[Interrupt, bool]] = []
        for interrupt_id, resolved in cmd.resume:
            interrupt = pending.get(interrupt_id)
            if interrupt is None:
                raise InvalidInput(f"no open interrupt {interrupt_id} on this thread")
            if interrupt.expired(run.created_at_ms):
                raise InvalidInput(
                    f"interrupt {interrupt_id} expired; start over with a new request",
                    code="interrupt_expired",
                )
            answers.append((interrupt, resolved))
        missing = set(pending) - {i.id for i, _ in answers}
        if missing:
            raise Conflict(
                "the thread has open interrupts; answer each in resume: "
                + ", ".join(sorted(missing))
            )
        return tuple(answers)

    async def _hold(self, run: Run) -> bool:
        """Takes the run's lease. Without the lease store the run still starts (its instance
        dying would then leave it to the next start of a single instance, not to a sweep)."""
        if self._leases is None:
            return False
        try:
            return await self._leases.hold(run.tenant_id, run.id)
        except ServiceUnavailable:
            return False

    async def _give_back(
        self, principal: Principal, slot_keys: Sequence[str], holder: str, leased: Run | None
    ) -> None:
        await self._slots.release(principal.tenant_id, slot_keys, holder)
        if leased is not None and self._leases is not None:
            with contextlib.suppress(ServiceUnavailable):
                await self._leases.release(leased.tenant_id, leased.id)

    async def _existing(self, run: Run) -> Run | None:
        async with self._uow.transaction(run.tenant_id) as tx:
            return await tx.runs.get(run.tenant_id, run.id)

    async def __call__(self, cmd: StartRunCommand) -> RunStart:
        principal = cmd.principal
        authorize(principal, Scope.RUNS, write=True, action="start runs")
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
        budget = await self._budget.admit(principal)
        holder = f"{run.id}:{new_id('s')}"
        places = await self._slots.acquire(principal, holder)
        slot_keys = places.keys
        leased = False
        try:
            # The lease comes before the record: a run recorded is never without an owner.
            leased = await self._hold(run)
            try:
                answers = await self._answers(cmd, run)
                await self._journal.record_start(run, cmd.messages)
            except (Conflict, InvalidInput):
                # A retried start: its interrupts were answered and its id recorded by the
                # first attempt. Anything else is the client's error as raised.
                existing = await self._existing(run)
                if existing is None:
                    raise
                if existing.thread_id != run.thread_id:
                    raise Conflict(
                        f"run id {run.id} is already used on another thread",
                        code="run_id_taken",
                    ) from None
                await self._give_back(principal, slot_keys, holder, run if leased else None)
                return RunStart(existing, attached=True, rate=places.rate)
        except BaseException:
            await self._give_back(principal, slot_keys, holder, run if leased else None)
            raise
        for status in (InterruptStatus.RESOLVED, InterruptStatus.CANCELLED):
            ids = [i.id for i, ok in answers if ok == (status is InterruptStatus.RESOLVED)]
            await self._interrupts.close(
                run.tenant_id, ids, status, actor=principal.subject, at_ms=run.created_at_ms
            )
        await self._events.open(principal.tenant_id, run.id)
        opening: tuple[RunEvent, ...] = (RunStarted(thread_id=run.thread_id, run_id=run.id),)
        if budget is not None and budget.state is BudgetState.SOFT:
            opening += (Custom(name="sba.budget_warning", value=budget.as_dict()),)
        await self._events.append(principal.tenant_id, run.id, opening)
        self._launcher.launch(
            RunAssignment(
                tenant_id=principal.tenant_id,
                thread_id=run.thread_id,
                run_id=run.id,
                agent=cmd.agent,
                created_at_ms=run.created_at_ms,
                messages=tuple(cmd.messages),
                forwarded_props=cmd.forwarded_props,
                tenant_slug=principal.tenant_slug,
                subject=principal.subject,
                client_tools=tuple(cmd.client_tools),
                state=cmd.state,
                supports_interrupts=cmd.supports_interrupts,
                resolutions=answers,
                slot_holder=holder,
                slot_keys=tuple(slot_keys),
            )
        )
        return RunStart(run, budget=budget, rate=places.rate)


class _Pieces:
    """Text as it streams in, delta by delta. Deltas are joined eight at a time, so that a
    long answer held for minutes is a few strings rather than an object per token, without
    copying what was joined already each time."""

    __slots__ = ("_joined", "_recent")

    def __init__(self) -> None:
        self._joined: list[str] = []
        self._recent: list[str] = []

    def append(self, delta: str) -> None:
        recent = self._recent
        recent.append(delta)
        if len(recent) == 8:
            self._joined.append("".join(recent))
            recent.clear()

    def __bool__(self) -> bool:
        return bool(self._joined or self._recent)

    def text(self) -> str:
        return "".join(self._joined) + "".join(self._recent)


@dataclass(slots=True)
class _PendingCall:
    name: str
    parts: _Pieces


def _prompt_tokens(request: ChatRequest) -> int:
    """About four characters a token: what a turn's prompt costs when no provider said."""
    chars = sum(len(m.content) for m in request.messages)
    return -(-chars // 4)


@dataclass(slots=True)
class _Tally:
    """Usage so far, kept outside the step so that a step that fails still counts."""

    usage: Usage
    model: str = ""
    # The turn streaming now, until its model reports what it used: its prompt's estimate and
    # the pieces streamed back so far (counted by the step itself, not by a wrapping stream:
    # a layer of async generator per chunk costs CPU, and an object alive per held stream).
    prompt: int = 0
    streamed: int = 0
    reported: bool = True

    def begin(self, request: ChatRequest) -> None:
        self.prompt, self.streamed, self.reported = _prompt_tokens(request), 0, False

    def cut_short(self) -> None:
        """A turn that ended before its model reported usage (cancelled, or failed midway) is
        counted by estimate: its prompt, and a token per piece that streamed back. Providers
        charge for both, so a cancelled run is not free."""
        if not self.reported and self.streamed:
            self.usage = self.usage + Usage(input_tokens=self.prompt, output_tokens=self.streamed)
        self.reported = True


def _offered(
    backend: Sequence[ToolSpec], client_tools: Sequence[ToolSpec], client_names: set[str]
) -> tuple[ToolSpec, ...]:
    """The tools a run offers its model: the backend's, less those the client brings itself."""
    return tuple([t for t in backend if t.name not in client_names] + list(client_tools))


class ExecuteRun:
    """The agent loop. Each step streams the model into the event log: its text as a message,
    its tool calls as tool-call events. Backend tool calls run (concurrently) through
    ``InvokeTool`` and their results go back to the model for the next step; a call to a tool
    the client declared ends the run, for the client to carry out and answer in its next run.
    The loop stops at an answer without tool calls, or fails with ``step_limit`` after
    ``max_steps``. The outcome and every message the run added are recorded durably before the
    terminal event is logged, so a client that saw RUN_FINISHED can read the answer back."""

    def __init__(
        self,
        journal: RunJournal,
        events: RunEventLog,
        model: ChatModel,
        clock: Clock,
        invoke_tool: InvokeTool,
        list_tools: ListTools,
        interrupts: InterruptStore,
        *,
        max_steps: int = 8,
        approval_ttl_ms: int = 3_600_000,
        slots: RunSlots | None = None,
        leases: RunLeases | None = None,
    ) -> None:
        self._slots = slots
        self._leases = leases
        self._interrupts = interrupts
        self._approval_ttl_ms = approval_ttl_ms
        self._journal = journal
        self._events = events
        self._model = model
        self._clock = clock
        self._invoke_tool = invoke_tool
        self._list_tools = list_tools
        self._max_steps = max_steps

    async def __call__(self, job: RunAssignment) -> None:
        try:
            slots = self._slots
            if slots is None or not job.slot_keys:
                await self._execute(job)
                return
            slots.keep(job.tenant_id, job.slot_keys, job.slot_holder)
            try:
                await self._execute(job)
            finally:
                await slots.end(job.tenant_id, job.slot_keys, job.slot_holder)
        finally:
            # The run has ended, its end logged: its lease goes (a lease kept by a failure
            # here lapses, and the sweep that claims it finds the run ended).
            if self._leases is not None:
                with contextlib.suppress(ServiceUnavailable):
                    await self._leases.release(job.tenant_id, job.run_id)

    async def _end(self, job: RunAssignment, event: RunEvent) -> None:
        """Logs the terminal event, giving the run's places back first: a client that saw the
        run end may start the next one at once."""
        if self._slots is not None and job.slot_keys:
            await self._slots.end(job.tenant_id, job.slot_keys, job.slot_holder)
        await self._events.append(job.tenant_id, job.run_id, (event,))

    async def _execute(self, job: RunAssignment) -> None:
        run = Run(
            id=job.run_id,
            tenant_id=job.tenant_id,
            thread_id=job.thread_id,
            agent=job.agent,
            created_at_ms=job.created_at_ms,
        )
        run.start()
        tally = _Tally(Usage())
        added: list[Message] = []
        invoked: list[ToolInvocation] = []  # written to the audit trail with the run's end
        log = self._events
        run_id = job.run_id
        tenant_id = job.tenant_id
        try:
            backend = self._list_tools(job.tenant_slug)
            client_names = {t.name for t in job.client_tools}
            tools = _offered(backend, job.client_tools, client_names)
            conversation = list(job.messages)
            # The client's state is kept as it is; the agent's own progress lives under "sba",
            # announced whole once, then changed by patches against that snapshot.
            await log.append(
                tenant_id,
                run_id,
                (StateSnapshot(snapshot={**job.state, "sba": {"step": 0, "toolCalls": []}}),),
            )
            tracked = 0
            ctx = ToolContext(
                tenant_id=tenant_id,
                tenant_slug=job.tenant_slug,
                subject=job.subject,
                run_id=run_id,
                agent=job.agent,
            )
            # Answered interrupts first: an approved call runs now, a declined one is reported.
            for interrupt, resolved in job.resolutions:
                if resolved:
                    approved = await self._invoke_tool.invoke(
                        ctx,
                        interrupt.tool_name,
                        interrupt.arguments,
                        call_id=interrupt.tool_call_id,
                    )
                    invoked.append(approved.invocation)
                    result = approved.result
                else:
                    result = error_result(ToolOutcome.REFUSED, "the person declined this tool call")
                reply = await self._tool_reply(job, interrupt.tool_call_id, result.content)
                conversation.append(reply)
                added.append(reply)
            pending_calls: tuple[str, ...] = ()
            waiting: list[Interrupt] = []
            for step in range(1, self._max_steps + 1):
                await log.append(
                    tenant_id,
                    run_id,
                    (
                        StateDelta(
                            operations=({"op": "replace", "path": "/sba/step", "value": step},)
                        ),
                    ),
                )
                request = ChatRequest(
                    tenant_id=tenant_id,
                    tenant_slug=job.tenant_slug,
                    messages=tuple(conversation),
                    tools=tools,
                    forwarded_props=job.forwarded_props,
                )
                assistant = await self._model_step(job, request, step, tally)
                if assistant is None:
                    break
                conversation.append(assistant)
                added.append(assistant)
                calls = assistant.tool_calls
                if not calls:
                    break
                waiting, pending_calls = await self._call_tools(
                    job, ctx, calls, client_names, tracked, conversation, added, invoked
                )
                tracked += len(calls)
                if waiting or pending_calls:
                    # A person decides, or the client carries out its own tools: the client's
                    # next run resumes.
                    break
            else:
                raise ApplicationError(
                    f"the agent did not finish within {self._max_steps} steps", code="step_limit"
                )
            # Succeed a copy: if recording the success fails, the run itself is still running
            # and can fail properly.
            succeeded = copy.copy(run)
            succeeded.model = tally.model
            succeeded.succeed(usage=tally.usage, at_ms=self._clock.now_ms())
            await self._journal.record_end(succeeded, added, invoked)
            outcome: RunEvent = RunFinished(
                thread_id=job.thread_id,
                run_id=job.run_id,
                usage=tally.usage,
                pending_tool_call_ids=pending_calls,
                interrupts=tuple(waiting),
            )
        except asyncio.CancelledError:
            tally.cut_short()
            run.cancel(at_ms=self._clock.now_ms(), usage=tally.usage)
            await self._record_failure(run, added, tally.model, invoked)
            await self._end(job, RunFailed(code="cancelled", message="the run was cancelled"))
            raise
        except ApplicationError as exc:
            tally.cut_short()
            run.fail(
                code=exc.code, message=exc.message, usage=tally.usage, at_ms=self._clock.now_ms()
            )
            await self._record_failure(run, added, tally.model, invoked)
            outcome = RunFailed(code=exc.code, message=exc.message)
        except Exception:  # a bug: the run must still end cleanly for its client
            tally.cut_short()
            run.fail(
                code="internal_error",
                message="the run failed unexpectedly",
                usage=tally.usage,
                at_ms=self._clock.now_ms(),
            )
            await self._record_failure(run, added, tally.model, invoked)
            await self._end(
                job, RunFailed(code="internal_error", message="the run failed unexpectedly")
            )
            raise
        await self._end(job, outcome)

    async def _call_tools(
        self,
        job: RunAssignment,
        ctx: ToolContext,
        calls: tuple[ToolCall, ...],
        client_names: set[str],
        first: int,
        conversation: list[Message],
        added: list[Message],
        invoked: list[ToolInvocation],
    ) -> tuple[list[Interrupt], tuple[str, ...]]:
        """Carries out the backend's tool calls of a model turn and tells the client about all
        of them (tracked from index ``first`` on). Returns the interrupts now waiting for a
        person and the ids of the calls the client carries out itself. (A method of its own:
        the comprehensions here would otherwise keep cells in the run's frame for its life.)"""
        log, tenant_id, run_id = self._events, job.tenant_id, job.run_id
        waiting: list[Interrupt] = []
        server_calls = [c for c in calls if c.name not in client_names]
        held = [
            c for c in server_calls if self._invoke_tool.needs_approval(job.tenant_slug, c.name)
        ]
        mine = [c for c in server_calls if c not in held]
        if held and job.supports_interrupts:
            waiting = [self._interrupt(job, c) for c in held]
            await self._interrupts.add(
                waiting, actor=f"agent:{job.agent}", at_ms=self._clock.now_ms()
            )
        elif held:
            # A client that cannot answer interrupts cannot approve: the model is told.
            for c in held:
                note = error_result(
                    ToolOutcome.REFUSED,
                    f"{c.name} needs a person's approval, which this client cannot give",
                )
                reply = await self._tool_reply(job, c.id, note.content)
                conversation.append(reply)
                added.append(reply)
        await log.append(
            tenant_id,
            run_id,
            (
                StateDelta(
                    operations=tuple(
                        {
                            "op": "add",
                            "path": "/sba/toolCalls/-",
                            "value": {
                                "id": c.id,
                                "name": c.name,
                                "status": "running" if c in mine else "client",
                            },
                        }
                        for c in calls
                    )
                ),
            ),
        )
        called = await asyncio.gather(
            *(self._invoke_tool.invoke(ctx, c.name, c.arguments, call_id=c.id) for c in mine)
        )
        invoked.extend(c.invocation for c in called)
        results = [c.result for c in called]
        status = {c.id: r.outcome.value for c, r in zip(mine, results, strict=True)}
        await log.append(
            tenant_id,
            run_id,
            (
                StateDelta(
                    operations=tuple(
                        {
                            "op": "replace",
                            "path": f"/sba/toolCalls/{first + i}/status",
                            "value": status[c.id],
                        }
                        for i, c in enumerate(calls)
                        if c.id in status
                    )
                ),
            ),
        )
        for call, result in zip(mine, results, strict=True):
            reply = await self._tool_reply(job, call.id, result.content)
            conversation.append(reply)
            added.append(reply)
        if waiting:
            return waiting, ()
        return waiting, tuple(c.id for c in calls if c.name in client_names)

    async def _model_step(
        self, job: RunAssignment, request: ChatRequest, step: int, tally: _Tally
    ) -> Message | None:
        """Streams one model turn into the log; returns the assistant message it produced."""
        log, tenant_id, run_id = self._events, job.tenant_id, job.run_id
        message_id = MessageId(new_id("msg"))
        text = _Pieces()
        open_text = False
        calls: dict[str, _PendingCall] = {}
        step_name = f"step {step}"
        await log.append(tenant_id, run_id, (StepStarted(name=step_name),))
        # Each chunk is appended as it comes: readers wake once per loop turn and take
        # everything appended since, so a fast model's tokens leave in few large writes
        # while a slow model's leave one by one.
        tally.begin(request)
        async for chunk in self._model.stream(request):
            if isinstance(chunk, TextChunk):
                tally.streamed += 1
                if not chunk.delta:
                    continue
                if not open_text:
                    open_text = True
                    await log.append(
                        tenant_id, run_id, (TextMessageStarted(message_id=message_id),)
                    )
                text.append(chunk.delta)
                await log.append(tenant_id, run_id, (TextDelta(message_id, chunk.delta),))
            elif isinstance(chunk, ModelToolCallStarted):
                if open_text:
                    # A text message is closed before a tool call starts: clients expect the
                    # two not to interleave.
                    open_text = False
                    await log.append(tenant_id, run_id, (TextMessageEnded(message_id=message_id),))
                if chunk.call_id in calls:
                    raise ModelError(
                        f"the model started tool call {chunk.call_id} twice",
                        code="model_bad_response",
                    )
                calls[chunk.call_id] = _PendingCall(chunk.name, _Pieces())
                await log.append(
                    tenant_id,
                    run_id,
                    (
                        ToolCallStarted(
                            call_id=chunk.call_id, name=chunk.name, parent_message_id=message_id
                        ),
                    ),
                )
            elif isinstance(chunk, ModelToolCallDelta):
                tally.streamed += 1
                pending = calls.get(chunk.call_id)
                if pending is None:
                    raise ModelError(
                        f"arguments for unknown tool call {chunk.call_id}",
                        code="model_bad_response",
                    )
                pending.parts.append(chunk.delta)
                await log.append(tenant_id, run_id, (ToolCallArgs(chunk.call_id, chunk.delta),))
            elif isinstance(chunk, ModelToolCallEnded):
                if chunk.call_id in calls:
                    await log.append(tenant_id, run_id, (ToolCallEnded(call_id=chunk.call_id),))
            elif isinstance(chunk, UsageChunk):
                tally.reported = True
                tally.usage = tally.usage + chunk.usage
                tally.model = chunk.model or tally.model
        tally.reported = True
        if open_text:
            await log.append(tenant_id, run_id, (TextMessageEnded(message_id=message_id),))
        await log.append(tenant_id, run_id, (StepFinished(name=step_name),))
        if not text and not calls:
            return None
        try:
            tool_calls = tuple(
                ToolCall(id=call_id, name=p.name, arguments=p.parts.text())
                for call_id, p in calls.items()
            )
            message = Message(
                id=message_id,
                role=Role.ASSISTANT,
                content=text.text(),
                tool_calls=tool_calls,
                created_at_ms=self._clock.now_ms(),
            )
        except DomainError as exc:
            raise ModelError(exc.message, code="model_bad_response") from exc
        return message

    async def _tool_reply(self, job: RunAssignment, call_id: str, content: str) -> Message:
        reply = Message(
            id=MessageId(new_id("tool")),
            role=Role.TOOL,
            content=content,
            tool_call_id=call_id,
            created_at_ms=self._clock.now_ms(),
        )
        await self._events.append(
            job.tenant_id,
            job.run_id,
            (ToolCallResult(message_id=reply.id, call_id=call_id, content=content),),
        )
        return reply

    def _interrupt(self, job: RunAssignment, call: ToolCall) -> Interrupt:
        return Interrupt(
            id=new_id("int"),
            tenant_id=job.tenant_id,
            thread_id=job.thread_id,
            run_id=job.run_id,
            tool_call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            reason="tool_approval",
            message=f"Approve running {call.name}?",
            expires_at_ms=self._clock.now_ms() + self._approval_ttl_ms,
        )

    async def _record_failure(
        self,
        run: Run,
        added: list[Message],
        model: str = "",
        invoked: Sequence[ToolInvocation] = (),
    ) -> None:
        run.model = model or run.model
        try:
            await self._journal.record_end(run, added, invoked)
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
        authorize(principal, Scope.RUNS, write=False, action="follow runs")
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
        authorize(principal, Scope.RUNS, write=True, action="cancel runs")
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
        authorize(principal, Scope.RUNS, write=False, action="read threads")
        async with self._uow.transaction(principal.tenant_id) as tx:
            thread = await tx.threads.get(principal.tenant_id, ThreadId(thread_id))
            if thread is None:
                raise NotFound(f"no thread {thread_id}")
            return await tx.threads.list_messages(principal.tenant_id, ThreadId(thread_id))

    async def page(
        self,
        principal: Principal,
        thread_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Message]:
        """A page of the thread's messages, oldest first."""
        authorize(principal, Scope.RUNS, write=False, action="read threads")
        size = check_limit(limit)
        start = int(decode_cursor(cursor, (int,))[0]) if cursor is not None else 0
        async with self._uow.transaction(principal.tenant_id) as tx:
            thread = await tx.threads.get(principal.tenant_id, ThreadId(thread_id))
            if thread is None:
                raise NotFound(f"no thread {thread_id}")
            found = await tx.threads.list_messages(
                principal.tenant_id, ThreadId(thread_id), start=start, limit=size + 1
            )
        return Page(found[:size], encode_cursor(start + size) if len(found) > size else None)


class GetRun:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, run_id: str) -> Run:
        authorize(principal, Scope.RUNS, write=False, action="read runs")
        async with self._uow.transaction(principal.tenant_id) as tx:
            run = await tx.runs.get(principal.tenant_id, RunId(run_id))
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run
