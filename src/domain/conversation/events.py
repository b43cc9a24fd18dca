"""What happens during a run, in the core's own words (AG-UI lives only at the HTTP edge)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.conversation.interrupts import Interrupt
from domain.conversation.model import Usage
from domain.ids import MessageId, RunId, ThreadId


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    thread_id: ThreadId
    run_id: RunId


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessageStarted:
    message_id: MessageId


@dataclass(frozen=True, slots=True)
class TextDelta:
    message_id: MessageId
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessageEnded:
    message_id: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted:
    call_id: str
    name: str
    parent_message_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class ToolCallArgs:
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEnded:
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallResult:
    message_id: MessageId
    call_id: str
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted:
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished:
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSnapshot:
    """The whole agent state the client should hold from now on."""

    snapshot: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateDelta:
    """RFC 6902 operations against the last snapshot; only ``add`` for new paths."""

    operations: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    thread_id: ThreadId
    run_id: RunId
    usage: Usage
    # Calls the client must carry out (its own tools), and interrupts waiting for a person.
    pending_tool_call_ids: tuple[str, ...] = ()
    interrupts: tuple[Interrupt, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFailed:
    code: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Custom:
    """An application event the client may act on (AG-UI ``CUSTOM``), e.g. a budget warning."""

    name: str
    value: Mapping[str, Any]


RunEvent = (
    RunStarted
    | TextMessageStarted
    | TextDelta
    | TextMessageEnded
    | ToolCallStarted
    | ToolCallArgs
    | ToolCallEnded
    | ToolCallResult
    | StepStarted
    | StepFinished
    | StateSnapshot
    | StateDelta
    | RunFinished
    | RunFailed
    | Custom
)

TERMINAL_EVENTS = (RunFinished, RunFailed)


def is_terminal(event: RunEvent) -> bool:
    return isinstance(event, TERMINAL_EVENTS)
