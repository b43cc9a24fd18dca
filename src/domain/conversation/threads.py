"""Threads as a person sees them in a list: a title, how many runs, when last active."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import InvariantViolated
from domain.ids import ThreadId

MAX_TITLE = 200
# A title taken from the first user message is cut here: a list shows one line of it.
DERIVED_TITLE = 80
UNTITLED = "New conversation"


def thread_title(title: str) -> str:
    """A title a person gives a thread: trimmed, one line, 1 to ``MAX_TITLE`` characters."""
    cleaned = " ".join(title.split())
    if not cleaned or len(cleaned) > MAX_TITLE:
        raise InvariantViolated(f"a thread title is 1 to {MAX_TITLE} characters")
    return cleaned


def derived_title(first_user_text: str | None) -> str:
    """The title of a thread nobody named: its first user message on one line, cut to
    ``DERIVED_TITLE`` characters (an ellipsis marks the cut), or ``UNTITLED``."""
    text = " ".join((first_user_text or "").split())
    if not text:
        return UNTITLED
    if len(text) <= DERIVED_TITLE:
        return text
    return text[: DERIVED_TITLE - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadSummary:
    """``title`` is the name a person gave the thread, else derived from its first user message
    (``named`` tells which). ``last_activity_ms``: the latest start or end of one of its runs,
    or its creation."""

    id: ThreadId
    title: str
    named: bool
    run_count: int
    created_at_ms: int
    last_activity_ms: int

    def __post_init__(self) -> None:
        if self.run_count < 0 or self.last_activity_ms < self.created_at_ms:
            raise InvariantViolated("a thread summary counts runs from zero, active since made")


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadRemoval:
    """What deleting a thread took with it."""

    thread_id: ThreadId
    runs: int
    messages: int
    interrupts: int
