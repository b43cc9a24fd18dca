"""AG-UI runs: start one and stream it, resume a stream, cancel, read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, HeaderParameter, QueryParameter

from application.conversation.approvals import PendingApprovals
from application.conversation.ports import ToolSpec
from application.conversation.use_cases import (
    CancelRun,
    GetRun,
    GetThreadMessages,
    StartRun,
    StartRunCommand,
    TailRun,
)
from application.errors import Conflict, InvalidInput, NotFound
from application.pagination import MAX_LIMIT
from domain.conversation.events import RunFailed, RunFinished, RunStarted
from domain.conversation.interrupts import Interrupt
from domain.conversation.model import Message, Role, Run, RunStatus, ToolCall
from domain.errors import DomainError
from domain.ids import MessageId, RunId
from domain.tenancy.model import Principal
from entrypoints.http.agui.encoder import (
    HEARTBEAT,
    encode_frame,
    encode_frames,
    messages_snapshot,
    to_wire,
)
from entrypoints.http.agui.models import (
    ActivityMessageIn,
    AssistantMessageIn,
    MessageIn,
    ReasoningMessageIn,
    RunAgentInput,
    ToolIn,
    ToolMessageIn,
    run_input_decoder,
    text_of,
)
from entrypoints.http.auth import RATE_STATE
from entrypoints.http.backpressure import StartGate
from entrypoints.http.inputs import json_body
from entrypoints.http.sse import EventStream
from entrypoints.settings import Settings

_ROLE = {
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "system": Role.SYSTEM,
    "developer": Role.DEVELOPER,
    "tool": Role.TOOL,
}


def to_domain_messages(messages: list[MessageIn]) -> list[Message]:
    out: list[Message] = []
    try:
        for m in messages:
            if isinstance(m, ActivityMessageIn | ReasoningMessageIn):
                continue  # UI-side records, not part of the conversation the model sees
            role = _ROLE[type(m).__struct_config__.tag]  # type: ignore[index]
            calls: tuple[ToolCall, ...] = ()
            if isinstance(m, AssistantMessageIn) and m.tool_calls:
                calls = tuple(
                    ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                    for c in m.tool_calls
                )
            out.append(
                Message(
                    id=MessageId(m.id),
                    role=role,
                    content=text_of(m.content),
                    tool_calls=calls,
                    tool_call_id=m.tool_call_id if isinstance(m, ToolMessageIn) else None,
                )
            )
    except DomainError as exc:
        raise InvalidInput(exc.message) from exc
    return out


def to_tool_specs(tools: list[ToolIn]) -> list[ToolSpec]:
    params = {"type": "object", "properties": {}}
    return [
        ToolSpec(
            name=t.name,
            description=t.description,
            parameters=t.parameters if isinstance(t.parameters, dict) else params,
        )
        for t in tools
    ]


async def tail(
    tail_run: TailRun,
    principal: Principal,
    run_id: str,
    *,
    after: int,
    heartbeat_s: float,
    v1: bool,
) -> AsyncIterator[bytes]:
    while True:
        batch = await tail_run(principal, run_id, after=after, wait_s=heartbeat_s)
        frames = encode_frames(batch.first_seq, batch.events, v1=v1) if batch.events else None
        if frames is not None:
            after = batch.last_seq
        done = batch.complete and after >= batch.last_seq
        heartbeat = not batch.complete and frames is None
        del batch  # a held stream keeps no events between reads
        if frames is not None:
            yield frames
            del frames
        elif heartbeat:
            yield HEARTBEAT
        if done:
            return


class RunOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    run_id: str
    thread_id: str
    agent: str
    status: str
    input_tokens: int
    output_tokens: int
    created_at_ms: int
    finished_at_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            run_id=run.id,
            thread_id=run.thread_id,
            agent=run.agent,
            status=str(run.status),
            input_tokens=run.usage.input_tokens,
            output_tokens=run.usage.output_tokens,
            created_at_ms=run.created_at_ms,
            finished_at_ms=run.finished_at_ms,
            error_code=run.error_code,
            error_message=run.error_message,
            model=run.model or None,
        )


class MessageOut(msgspec.Struct, kw_only=True):
    id: str
    role: str
    content: str


class MessagesOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    messages: list[MessageOut]
    # Send it back as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


def _replay_from_store(
    run: Run, messages: list[Message], waiting: tuple[Interrupt, ...] = ()
) -> bytes:
    """A finished run whose live log has expired: RUN_STARTED, the thread as a snapshot, and
    the outcome (with the approvals it still waits for), so a client asking for it from
    scratch still sees a whole, valid stream it can answer."""
    end = (
        RunFinished(thread_id=run.thread_id, run_id=run.id, usage=run.usage, interrupts=waiting)
        if run.status is RunStatus.SUCCEEDED
        else RunFailed(code=run.error_code or str(run.status), message=run.error_message or "")
    )
    return (
        encode_frame(to_wire(RunStarted(thread_id=run.thread_id, run_id=run.id), v1=False))
        + encode_frame(messages_snapshot(messages))
        + encode_frame(to_wire(end, v1=False))
    )


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    start = after if after is not None else 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidInput("Last-Event-ID must be the integer id of a received event")
        start = int(last_event_id)
    if start < 0:
        raise InvalidInput("after must be zero or more")
    return start


async def _resume(
    principal: Principal,
    run_id: RunId,
    start: int,
    tail_run: TailRun,
    get_run: GetRun,
    messages: GetThreadMessages,
    approvals: PendingApprovals,
    settings: Settings,
    *,
    v1: bool,
) -> EventStream:
    """The run's events after ``start``, then its live tail; a finished run whose live log
    has expired is replayed from the store."""
    try:
        # Probe without waiting so that an unknown run is a 404, not an empty stream.
        await tail_run(principal, run_id, after=start, wait_s=0)
    except NotFound:
        run = await get_run(principal, run_id)
        if not run.status.is_terminal:
            raise Conflict(
                f"run {run_id} is starting or its instance stopped; retry shortly",
                code="run_not_streaming",
            ) from None
        history = await messages(principal, run.thread_id)
        succeeded = run.status is RunStatus.SUCCEEDED
        waiting = await approvals(principal, run) if succeeded else ()
        return EventStream(iter((_replay_from_store(run, history, waiting),)))
    stream = tail(
        tail_run,
        principal,
        run_id,
        after=start,
        heartbeat_s=settings.http.heartbeat_s,
        v1=v1,
    )
    return EventStream(stream)


class RunController(Controller):
    path = "/v1"
    tags = ["runs"]

    @post(
        "/agents/{agent:str}/runs",
        status_code=200,
        summary="Start an AG-UI run and stream its events",
        description="Body: AG-UI RunAgentInput. Answer: text/event-stream of AG-UI events, each "
        "frame with an `id:` for resuming through GET /v1/runs/{runId}/events. Sending a "
        "`runId` again (a retry) attaches to that run instead of starting another: its events "
        "from the start, or after `Last-Event-ID`.",
        opt={"rate_class": "runs", "idempotency": "run_id", "body": RunAgentInput},
    )
    @inject
    async def start(
        self,
        request: Request[Any, Any, Any],
        agent: FromPath[str],
        principal: FromDishka[Principal],
        start_run: FromDishka[StartRun],
        tail_run: FromDishka[TailRun],
        get_run: FromDishka[GetRun],
        messages: FromDishka[GetThreadMessages],
        approvals: FromDishka[PendingApprovals],
        settings: FromDishka[Settings],
        gate: FromDishka[StartGate],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> EventStream:
        body: RunAgentInput = await json_body(request, run_input_decoder)
        forwarded = body.forwarded_props if isinstance(body.forwarded_props, dict) else {}
        command = StartRunCommand(
            principal=principal,
            agent=agent,
            thread_id=body.thread_id,
            run_id=body.run_id,
            messages=to_domain_messages(body.messages),
            forwarded_props=forwarded,
            client_tools=to_tool_specs(body.tools),
            state=body.state if isinstance(body.state, dict) else {},
            supports_interrupts=body.protocol_version is not None,
            resume=[(r.interrupt_id, r.status == "resolved") for r in body.resume or ()],
        )
        # A burst of starts waits its turn here rather than inside the connection pools.
        async with gate.place(principal.tenant_id):
            started = await start_run(command)
        if started.rate is not None and started.rate.results:
            request.state[RATE_STATE] = started.rate
        v1 = body.protocol_version is not None
        if started.attached:
            return await _resume(
                principal,
                started.run.id,
                _resume_point(last_event_id, None),
                tail_run,
                get_run,
                messages,
                approvals,
                settings,
                v1=v1,
            )
        stream = tail(
            tail_run,
            principal,
            started.run.id,
            after=0,
            heartbeat_s=settings.http.heartbeat_s,
            v1=v1,
        )
        response = EventStream(stream)
        if started.budget is not None:
            b = started.budget
            response.headers["SBA-Token-Budget"] = (
                f"state={b.state.value}; used={b.used_tokens}; soft={b.soft_tokens}; "
                f"hard={b.hard_tokens}; period={b.period.value}"
            )
        return response

    @get(
        "/runs/{run_id:str}/events",
        summary="Resume a run's event stream",
        description="Replays the run's events after `Last-Event-ID` (header) or `after` "
        "(query), then follows the live tail. With neither, replays from the start.",
    )
    @inject
    async def events(
        self,
        run_id: FromPath[str],
        principal: FromDishka[Principal],
        tail_run: FromDishka[TailRun],
        get_run: FromDishka[GetRun],
        messages: FromDishka[GetThreadMessages],
        approvals: FromDishka[PendingApprovals],
        settings: FromDishka[Settings],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
        after: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> EventStream:
        return await _resume(
            principal,
            RunId(run_id),
            _resume_point(last_event_id, after),
            tail_run,
            get_run,
            messages,
            approvals,
            settings,
            v1=False,
        )

    @get("/runs/{run_id:str}", summary="A run's status and usage")
    @inject
    async def get_run(
        self, run_id: FromPath[str], principal: FromDishka[Principal], get_run: FromDishka[GetRun]
    ) -> RunOut:
        return RunOut.of(await get_run(principal, RunId(run_id)))

    @delete("/runs/{run_id:str}", status_code=202, summary="Cancel a run in progress")
    @inject
    async def cancel(
        self,
        run_id: FromPath[str],
        principal: FromDishka[Principal],
        cancel_run: FromDishka[CancelRun],
    ) -> RunOut:
        return RunOut.of(await cancel_run(principal, run_id))

    @get(
        "/threads/{thread_id:str}/messages",
        summary="A thread's stored messages, oldest first, a page at a time",
        description="At most `limit` messages (default 100, at most 500); when more follow, "
        "`nextCursor` is set: send it back as `cursor` for the next page.",
        tags=["threads"],
    )
    @inject
    async def thread_messages(
        self,
        thread_id: FromPath[str],
        principal: FromDishka[Principal],
        messages: FromDishka[GetThreadMessages],
        limit: Annotated[int | None, QueryParameter(ge=1, le=MAX_LIMIT)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=256)] = None,
    ) -> MessagesOut:
        page = await messages.page(principal, thread_id, limit=limit, cursor=cursor)
        return MessagesOut(
            messages=[MessageOut(id=m.id, role=str(m.role), content=m.content) for m in page.items],
            next_cursor=page.next_cursor,
        )
