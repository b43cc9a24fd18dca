"""Core run events → AG-UI SSE frames.

Frames are ``id: <seq>\\ndata: <json>\\n\\n`` with LF only (a CRLF frame breaks
``@ag-ui/client``), optional fields omitted rather than sent as null, and 1.0-only shapes
(``outcome``, ``usage``) sent only to clients that declared a ``protocolVersion``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

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
from domain.conversation.model import Message


class _Event(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, tag_field="type"):
    pass


class RunStartedOut(_Event, tag="RUN_STARTED", kw_only=True):
    thread_id: str
    run_id: str


class InterruptOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    reason: str
    message: str | None = None
    tool_call_id: str | None = None
    expires_at: str | None = None


class OutcomeOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    type: str
    pending_tool_call_ids: list[str] | None = None
    interrupts: list[InterruptOut] | None = None


class UsageOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int


class RunFinishedOut(_Event, tag="RUN_FINISHED", kw_only=True):
    thread_id: str
    run_id: str
    outcome: OutcomeOut | None = None
    usage: list[UsageOut] | None = None


class RunErrorOut(_Event, tag="RUN_ERROR", kw_only=True):
    message: str
    code: str | None = None


class TextMessageStartOut(_Event, tag="TEXT_MESSAGE_START", kw_only=True):
    message_id: str
    role: str


class TextMessageContentOut(_Event, tag="TEXT_MESSAGE_CONTENT", kw_only=True):
    message_id: str
    delta: str


class TextMessageEndOut(_Event, tag="TEXT_MESSAGE_END", kw_only=True):
    message_id: str


class ToolCallStartOut(_Event, tag="TOOL_CALL_START", kw_only=True):
    tool_call_id: str
    tool_call_name: str
    parent_message_id: str | None = None


class ToolCallArgsOut(_Event, tag="TOOL_CALL_ARGS", kw_only=True):
    tool_call_id: str
    delta: str


class ToolCallEndOut(_Event, tag="TOOL_CALL_END", kw_only=True):
    tool_call_id: str


class ToolCallResultOut(_Event, tag="TOOL_CALL_RESULT", kw_only=True):
    message_id: str
    tool_call_id: str
    content: str
    role: str | None = None


class StepStartedOut(_Event, tag="STEP_STARTED", kw_only=True):
    step_name: str


class StepFinishedOut(_Event, tag="STEP_FINISHED", kw_only=True):
    step_name: str


class StateSnapshotOut(_Event, tag="STATE_SNAPSHOT", kw_only=True):
    snapshot: Any


class StateDeltaOut(_Event, tag="STATE_DELTA", kw_only=True):
    delta: list[Any]


class CustomOut(_Event, tag="CUSTOM", kw_only=True):
    name: str
    value: Any


class FunctionOut(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, kw_only=True):
    id: str
    function: FunctionOut
    type: str = "function"


class MessageOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    role: str
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    tool_call_id: str | None = None


class MessagesSnapshotOut(_Event, tag="MESSAGES_SNAPSHOT", kw_only=True):
    messages: list[MessageOut]


_SUCCESS = OutcomeOut(type="success")


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


_encode = msgspec.json.Encoder().encode


def to_wire(event: RunEvent, *, v1: bool) -> _Event:
    if isinstance(event, TextDelta):
        return TextMessageContentOut(message_id=event.message_id, delta=event.delta)
    if isinstance(event, TextMessageStarted):
        return TextMessageStartOut(message_id=event.message_id, role="assistant")
    if isinstance(event, TextMessageEnded):
        return TextMessageEndOut(message_id=event.message_id)
    if isinstance(event, ToolCallArgs):
        return ToolCallArgsOut(tool_call_id=event.call_id, delta=event.delta)
    if isinstance(event, ToolCallStarted):
        return ToolCallStartOut(
            tool_call_id=event.call_id,
            tool_call_name=event.name,
            parent_message_id=event.parent_message_id,
        )
    if isinstance(event, ToolCallEnded):
        return ToolCallEndOut(tool_call_id=event.call_id)
    if isinstance(event, ToolCallResult):
        return ToolCallResultOut(
            message_id=event.message_id,
            tool_call_id=event.call_id,
            content=event.content,
            role="tool" if v1 else None,
        )
    if isinstance(event, StateDelta):
        return StateDeltaOut(delta=[dict(op) for op in event.operations])
    if isinstance(event, StateSnapshot):
        return StateSnapshotOut(snapshot=event.snapshot)
    if isinstance(event, Custom):
        return CustomOut(name=event.name, value=dict(event.value))
    if isinstance(event, StepStarted):
        return StepStartedOut(step_name=event.name)
    if isinstance(event, StepFinished):
        return StepFinishedOut(step_name=event.name)
    if isinstance(event, RunStarted):
        return RunStartedOut(thread_id=event.thread_id, run_id=event.run_id)
    if isinstance(event, RunFinished):
        # Only a run whose client declared AG-UI 1.0 opens interrupts, so a run that holds any
        # carries its outcome on every stream of it: a resume (GET …/events) cannot say which
        # protocol its client speaks, and without the outcome the approval could not be given.
        if not v1 and not event.interrupts:
            return RunFinishedOut(thread_id=event.thread_id, run_id=event.run_id)
        usage = event.usage
        if event.interrupts:
            outcome = OutcomeOut(
                type="interrupt",
                interrupts=[
                    InterruptOut(
                        id=i.id,
                        reason=i.reason,
                        message=i.message,
                        tool_call_id=i.tool_call_id,
                        expires_at=_iso(i.expires_at_ms),
                    )
                    for i in event.interrupts
                ],
            )
        elif event.pending_tool_call_ids:
            outcome = OutcomeOut(
                type="success", pending_tool_call_ids=list(event.pending_tool_call_ids)
            )
        else:
            outcome = _SUCCESS
        return RunFinishedOut(
            thread_id=event.thread_id,
            run_id=event.run_id,
            outcome=outcome,
            usage=[
                UsageOut(
                    provider="sba",
                    model="default",
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    total_tokens=usage.total_tokens,
                )
            ],
        )
    if isinstance(event, RunFailed):
        return RunErrorOut(message=event.message, code=event.code)
    raise TypeError(f"no AG-UI form for {type(event).__name__}")


def encode_frames(first_seq: int, events: Sequence[RunEvent], *, v1: bool) -> bytes:
    out = bytearray()
    seq = first_seq
    for event in events:
        out += b"id: %d\ndata: " % seq
        out += _encode(to_wire(event, v1=v1))
        out += b"\n\n"
        seq += 1
    return bytes(out)


def encode_frame(event: _Event, seq: int | None = None) -> bytes:
    head = b"id: %d\n" % seq if seq is not None else b""
    return head + b"data: " + _encode(event) + b"\n\n"


def messages_snapshot(messages: Sequence[Message]) -> MessagesSnapshotOut:
    return MessagesSnapshotOut(
        messages=[
            MessageOut(
                id=m.id,
                role=str(m.role),
                content=m.content if m.content or not m.tool_calls else None,
                tool_calls=[
                    ToolCallOut(id=c.id, function=FunctionOut(name=c.name, arguments=c.arguments))
                    for c in m.tool_calls
                ]
                or None,
                tool_call_id=m.tool_call_id,
            )
            for m in messages
        ]
    )


HEARTBEAT = b": ping\n\n"
