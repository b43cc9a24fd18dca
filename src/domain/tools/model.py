"""Tasks, and what the tool registry records about each invocation."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import re
from dataclasses import dataclass

from domain.errors import InvariantViolated
from domain.ids import TenantId


class ToolOutcome(enum.StrEnum):
    OK = "ok"
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    REFUSED = "refused"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


def arguments_digest(arguments: str) -> str:
    """What the audit keeps of a call's arguments: enough to match calls, nothing readable."""
    return hashlib.sha256(arguments.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInvocation:
    tenant_id: TenantId
    subject: str
    run_id: str
    tool: str
    arguments_digest: str
    outcome: ToolOutcome
    latency_ms: float
    at_ms: int
    # The model's id for the call (the audit trail's subject), and the error code of a call
    # that did not succeed.
    call_id: str = ""
    error_code: str | None = None


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class Unset(enum.Enum):
    """A field left out of a change, told apart from one set to None."""

    UNSET = "unset"


UNSET = Unset.UNSET


MAX_ASSIGNEE = 200
_DUE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def due_date(text: str) -> str:
    """A due date as a person sets it: a real calendar day, ``YYYY-MM-DD``. (Tasks the agent
    created before may hold freer text; they are read back as they are.)"""
    if not _DUE.fullmatch(text):
        raise InvariantViolated("a due date is a day, YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise InvariantViolated(f"{text} is not a day of the calendar") from None
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """``assignee`` is whoever the team handed the task to: a free identifier (a person's
    name, ``user:<subject>``), or None while nobody has it."""

    id: str
    tenant_id: TenantId
    title: str
    notes: str = ""
    due: str | None = None
    status: TaskStatus = TaskStatus.OPEN
    created_by: str = ""
    created_at_ms: int = 0
    assignee: str | None = None

    def __post_init__(self) -> None:
        if not self.title.strip() or len(self.title) > 300:
            raise InvariantViolated("a task title is 1 to 300 characters")
        if self.assignee is not None and not (
            0 < len(self.assignee) <= MAX_ASSIGNEE and self.assignee.isprintable()
        ):
            raise InvariantViolated(f"an assignee is 1 to {MAX_ASSIGNEE} printable characters")

    def changed(
        self,
        *,
        title: str | None = None,
        notes: str | None = None,
        due: str | Unset | None = UNSET,
        status: TaskStatus | None = None,
        assignee: str | Unset | None = UNSET,
    ) -> Task:
        """This task with the given fields changed (``due`` and ``assignee`` may be cleared
        with None); the invariants hold for the result."""
        return dataclasses.replace(
            self,
            title=self.title if title is None else title.strip(),
            notes=self.notes if notes is None else notes,
            due=self.due if isinstance(due, Unset) else (None if due is None else due_date(due)),
            status=self.status if status is None else status,
            assignee=self.assignee
            if isinstance(assignee, Unset)
            else (None if assignee is None else assignee.strip() or None),
        )

    def differences(self, other: Task) -> list[str]:
        """The names of the fields a person may change that differ in ``other``."""
        fields = ("title", "notes", "due", "status", "assignee")
        return [f for f in fields if getattr(self, f) != getattr(other, f)]
