"""Tasks, and what the tool registry records about each invocation."""

from __future__ import annotations

import enum
import hashlib
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: str
    tenant_id: TenantId
    title: str
    notes: str = ""
    due: str | None = None
    status: TaskStatus = TaskStatus.OPEN
    created_by: str = ""
    created_at_ms: int = 0

    def __post_init__(self) -> None:
        if not self.title.strip() or len(self.title) > 300:
            raise InvariantViolated("a task title is 1 to 300 characters")
