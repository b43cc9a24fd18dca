"""What happens during a run, in the core's own words (AG-UI lives only at the HTTP edge)."""

from __future__ import annotations

from dataclasses import dataclass

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
class RunFinished:
    thread_id: ThreadId
    run_id: RunId
    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFailed:
    code: str
    message: str


RunEvent = RunStarted | TextMessageStarted | TextDelta | TextMessageEnded | RunFinished | RunFailed

TERMINAL_EVENTS = (RunFinished, RunFailed)


def is_terminal(event: RunEvent) -> bool:
    return isinstance(event, TERMINAL_EVENTS)
