"""Threads, messages and runs, with the run's state machine."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.errors import InvalidTransition, InvariantViolated
from domain.ids import MessageId, RunId, TenantId, ThreadId, is_valid_client_id


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    DEVELOPER = "developer"
    TOOL = "tool"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A model's request to run a tool; ``arguments`` is the JSON text the model produced."""

    id: str
    name: str
    arguments: str

    def __post_init__(self) -> None:
        if not is_valid_client_id(self.id):
            raise InvariantViolated(f"tool call id {self.id!r} is not a valid identifier")
        if not self.name:
            raise InvariantViolated("a tool call needs a tool name")


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: MessageId
    role: Role
    content: str
    created_at_ms: int = 0
    # An assistant message may ask for tools; a tool message answers one call.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if not is_valid_client_id(self.id):
            raise InvariantViolated(f"message id {self.id!r} is not a valid identifier")
        if self.tool_calls and self.role is not Role.ASSISTANT:
            raise InvariantViolated("only assistant messages carry tool calls")
        if (self.role is Role.TOOL) != (self.tool_call_id is not None):
            raise InvariantViolated("a tool message, and only a tool message, names its call")


class Thread:
    """A conversation of one tenant. Compared by identity (tenant, id)."""

    __slots__ = ("created_at_ms", "id", "tenant_id")

    def __init__(self, *, id: ThreadId, tenant_id: TenantId, created_at_ms: int) -> None:
        if not is_valid_client_id(id):
            raise InvariantViolated(f"thread id {id!r} is not a valid identifier")
        self.id = id
        self.tenant_id = tenant_id
        self.created_at_ms = created_at_ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thread) and (self.tenant_id, self.id) == (
            other.tenant_id,
            other.id,
        )

    def __hash__(self) -> int:
        return hash((self.tenant_id, self.id))


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

# The whole state machine: a run starts pending, runs once, and ends exactly once.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __post_init__(self) -> None:
        if self.input_tokens < 0 or self.output_tokens < 0:
            raise InvariantViolated("token counts cannot be negative")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class Run:
    """One execution of an agent on a thread. Entity: compared by (tenant, id)."""

    __slots__ = (
        "agent",
        "created_at_ms",
        "error_code",
        "error_message",
        "finished_at_ms",
        "id",
        "model",
        "status",
        "tenant_id",
        "thread_id",
        "usage",
    )

    def __init__(
        self,
        *,
        id: RunId,
        tenant_id: TenantId,
        thread_id: ThreadId,
        agent: str,
        created_at_ms: int,
        status: RunStatus = RunStatus.PENDING,
        usage: Usage | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        finished_at_ms: int | None = None,
        model: str = "",
    ) -> None:
        if not is_valid_client_id(id):
            raise InvariantViolated(f"run id {id!r} is not a valid identifier")
        self.id = id
        self.tenant_id = tenant_id
        self.thread_id = thread_id
        self.agent = agent
        self.created_at_ms = created_at_ms
        self.status = status
        self.usage = usage or Usage()
        self.error_code = error_code
        self.error_message = error_message
        self.finished_at_ms = finished_at_ms
        # The model (by its name in the chain) that answered the run's last model call.
        self.model = model

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (self.tenant_id, self.id) == (other.tenant_id, other.id)

    def __hash__(self) -> int:
        return hash((self.tenant_id, self.id))

    def _move(self, to: RunStatus) -> None:
        if to not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"run {self.id} cannot go from {self.status} to {to}")
        self.status = to

    def start(self) -> None:
        self._move(RunStatus.RUNNING)

    def succeed(self, *, usage: Usage, at_ms: int) -> None:
        self._move(RunStatus.SUCCEEDED)
        self.usage = usage
        self.finished_at_ms = at_ms

    def fail(self, *, code: str, message: str, usage: Usage | None = None, at_ms: int) -> None:
        self._move(RunStatus.FAILED)
        self.error_code = code
        self.error_message = message
        if usage is not None:
            self.usage = usage
        self.finished_at_ms = at_ms

    def cancel(self, *, at_ms: int, usage: Usage | None = None) -> None:
        self._move(RunStatus.CANCELLED)
        if usage is not None:
            self.usage = usage
        self.finished_at_ms = at_ms
