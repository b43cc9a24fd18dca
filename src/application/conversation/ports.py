"""Ports of the conversation context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.conversation.events import RunEvent
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.conversation.model import Message, Run, Thread, Usage
from domain.ids import RunId, TenantId, ThreadId
from domain.tools.model import ToolInvocation


class ThreadRepository(Protocol):
    """Threads and their messages, always within one tenant."""

    async def get(self, tenant_id: TenantId, thread_id: ThreadId) -> Thread | None: ...

    async def add(self, thread: Thread) -> None: ...

    async def add_messages(
        self, tenant_id: TenantId, thread_id: ThreadId, messages: Sequence[Message]
    ) -> int:
        """Stores the messages whose ids the thread does not hold yet, in order; returns how many
        were new. Clients resend the whole history on every run, so this is idempotent."""
        ...

    async def list_messages(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> list[Message]:
        """The thread's messages in order, from the ``start``-th (0: the first); at most
        ``limit`` of them. Messages are only ever added at the end, so ``start`` stays valid."""
        ...


class RunRepository(Protocol):
    """Runs, always within one tenant. ``add`` raises ``Conflict`` for an id already used."""

    async def get(self, tenant_id: TenantId, run_id: RunId) -> Run | None: ...

    async def add(self, run: Run) -> None: ...

    async def save(self, run: Run) -> None: ...

    async def unfinished(self, tenant_id: TenantId, *, limit: int) -> list[Run]:
        """Up to ``limit`` of the tenant's runs still pending or running, oldest first."""
        ...


class RunJournal(Protocol):
    """The durable record of a run's start and end: the hot path's only writes.

    Each call returns once its record is committed. Adapters may commit concurrent records
    together (group commit); a record that cannot be applied fails alone, never its batch.
    Each record appends its audit entries to the run's tenant trail in the same transaction:
    ``run.started``; then ``tool.called`` per invocation and ``run.finished``."""

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        """Creates the run's thread if it does not exist, stores the messages the thread does
        not hold yet (in order) and the run. Raises ``Conflict`` when the run id is taken."""
        ...

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        """Stores a run's final state and the messages the run added to its thread (assistant
        replies, tool calls and tool results), in order, with an audit entry per tool
        invocation (``tool_calls``, in order) before the run's own. A run that already ended
        keeps its first ending, and nothing of the later one is recorded."""
        ...


class InterruptStore(Protocol):
    """Interrupts waiting for a person, per tenant and thread. ``close`` changes only pending
    interrupts of that tenant. Each interrupt opened (``interrupt.opened``) and each one closed
    (``interrupt.resolved``, with its outcome) is on the tenant's audit trail, appended by
    ``actor`` at ``at_ms`` in the transaction of the change; all interrupts of one ``add``
    belong to one tenant."""

    async def add(self, interrupts: Sequence[Interrupt], *, actor: str, at_ms: int) -> None: ...

    async def pending(self, tenant_id: TenantId, thread_id: ThreadId) -> list[Interrupt]: ...

    async def close(
        self,
        tenant_id: TenantId,
        ids: Sequence[str],
        status: InterruptStatus,
        *,
        actor: str,
        at_ms: int,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class TextChunk:
    delta: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The model began a tool call. ``call_id`` is unique within the response."""

    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the call's JSON arguments text, in order."""

    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class ToolCallEnded:
    call_id: str


@dataclass(frozen=True, slots=True)
class UsageChunk:
    usage: Usage
    # Which model of the chain produced it (set by the chain; empty from a bare model).
    model: str = ""


ChatChunk = TextChunk | ToolCallStarted | ToolCallDelta | ToolCallEnded | UsageChunk


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool the model may call: ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    tenant_id: TenantId
    messages: tuple[Message, ...]
    tenant_slug: str = ""
    tools: tuple[ToolSpec, ...] = ()
    # A provider-specific model name; None means the adapter's configured default.
    model: str | None = None
    forwarded_props: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAssignment:
    """Everything an executor needs to carry a run out of the request that started it."""

    tenant_id: TenantId
    thread_id: ThreadId
    run_id: RunId
    agent: str
    created_at_ms: int
    messages: tuple[Message, ...]
    forwarded_props: Mapping[str, Any]
    tenant_slug: str = ""
    subject: str = ""
    # Tools the client declared: calls to them end the run and are carried out by the client.
    client_tools: tuple[ToolSpec, ...] = ()
    # The agent state the client holds (RunAgentInput.state), kept and extended under "sba".
    state: Mapping[str, Any] = field(default_factory=dict)
    # AG-UI 1.0 clients can answer interrupts; older ones cannot.
    supports_interrupts: bool = False
    # Interrupts of the thread that this run answers: (interrupt, resolved?).
    resolutions: tuple[tuple[Interrupt, bool], ...] = ()
    # The concurrency places the run holds, to give back when it ends.
    slot_holder: str = ""
    slot_keys: tuple[str, ...] = ()


class ChatModel(Protocol):
    """Streams a model's answer: text, tool calls (started, argument pieces, ended, never
    interleaved within one call) and usage. Raises ``ModelError`` (never a provider's own
    exception) when the provider fails, with a code saying how: ``model_timeout``,
    ``model_rate_limited``, ``model_unavailable`` (5xx, connection), ``model_auth``,
    ``model_bad_request``, ``model_bad_response``. A cancelled stream stops promptly."""

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Consecutive events of one run: ``events[i]`` has sequence number ``first_seq + i``."""

    first_seq: int
    events: Sequence[RunEvent]
    # True once the run's terminal event has been appended and this batch reaches it.
    complete: bool

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1


class RunEventLog(Protocol):
    """An append-only, per-run log of events with gap-free sequence numbers from 1. Readers may
    tail it from any sequence number while it is retained; appends are visible to readers at
    once. The log is bounded per run and expires after the run ends."""

    async def open(self, tenant_id: TenantId, run_id: RunId) -> None: ...

    async def append(self, tenant_id: TenantId, run_id: RunId, events: Sequence[RunEvent]) -> int:
        """Appends in order and returns the sequence number of the last event. Runs are told
        apart by tenant and id: two tenants may use the same run id."""
        ...

    async def read(
        self, tenant_id: TenantId, run_id: RunId, *, after: int, wait_s: float
    ) -> EventBatch | None:
        """Events with seq > ``after``; when none are there yet, waits up to ``wait_s`` and may
        return an empty batch. ``None`` when the log holds no such run for this tenant."""
        ...

    async def end_lost(self, tenant_id: TenantId, run_id: RunId, event: RunEvent) -> bool:
        """Ends the log of a run whose writer is gone (its instance died): appends the terminal
        ``event`` after the last event the log holds. False, and nothing appended, when the log
        holds no such run or its end already."""
        ...


class RunLauncher(Protocol):
    """Runs an assignment in the background, outside any request, so that a client that
    disconnects neither stops nor loses the run."""

    def launch(self, assignment: RunAssignment) -> None: ...

    def cancel(self, tenant_id: TenantId, run_id: RunId) -> bool:
        """Asks the tenant's run executing here to stop; False if it is not executing here."""
        ...

    async def drain(self, grace_s: float) -> None:
        """Waits up to ``grace_s`` for runs in progress, then cancels the rest."""
        ...


class RunLeases(Protocol):
    """Which instance executes each run. The executing instance holds a lease on a run from
    before the run is recorded until its end is logged, renewed in the background every third
    of its term; a lease not renewed in time lapses (its instance died or stalled).
    ``claim_lapsed`` hands each lapsed run to exactly one caller on any instance, holding it for
    that caller for one more term, so that a claimer that dies too leaves it to the next.
    ``hold`` is False when the run was held already (a retried start)."""

    async def hold(self, tenant_id: TenantId, run_id: RunId) -> bool: ...

    async def release(self, tenant_id: TenantId, run_id: RunId) -> None: ...

    async def claim_lapsed(self, *, limit: int) -> list[tuple[TenantId, RunId]]: ...
