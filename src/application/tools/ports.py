"""Ports of the tools context."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

from application.conversation.ports import ToolSpec
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus, ToolInvocation, ToolOutcome

_CODE = re.compile(r"[a-z][a-z0-9_.]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    tenant_id: TenantId
    tenant_slug: str
    subject: str
    run_id: str
    agent: str = "assistant"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """What goes back to the model: ``content`` is JSON text, an error object when not ok."""

    content: str
    outcome: ToolOutcome

    @property
    def ok(self) -> bool:
        return self.outcome is ToolOutcome.OK

    @property
    def error_code(self) -> str | None:
        """The machine code of a result that is not ok: the ``error`` of its JSON object when
        that is a short code, else the outcome. Never text a person or the model wrote."""
        if self.ok:
            return None
        try:
            code = json.loads(self.content).get("error")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, str) and _CODE.fullmatch(code):
            return code
        return self.outcome.value


class ToolRegistry(Protocol):
    """The backend tools. ``run`` validates the arguments against the tool's schema before
    executing it; invalid arguments, an unknown tool or a failure come back as a result (for the
    model to read), never as an exception."""

    def specs(self) -> list[ToolSpec]: ...

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult: ...


class ToolPolicy(Protocol):
    """Which tools a tenant may use (None means every tool), and which of them wait for a
    person's approval before they run."""

    def allowed(self, tenant_slug: str) -> frozenset[str] | None: ...

    def needs_approval(self, tenant_slug: str, tool: str) -> bool: ...


class ToolAudit(Protocol):
    """Records every invocation, allowed or not, as it happens (for latency metrics and a
    recent view). The durable record is the tenant's audit trail, written by the run journal
    with the run's end."""

    async def record(self, invocation: ToolInvocation) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    """Which tasks a list holds: every field set must match (``due_from`` and ``due_to`` are
    inclusive days, ``YYYY-MM-DD``; a task without a due date matches neither)."""

    status: TaskStatus | None = None
    assignee: str | None = None
    due_from: str | None = None
    due_to: str | None = None


class TaskRepository(Protocol):
    """A tenant's tasks, always within one tenant. Every change appends its audit entry to the
    tenant's trail in the same transaction: ``add`` at the task's creation time, ``save`` and
    ``delete`` at ``at_ms``."""

    async def add(self, task: Task, *, audit: AuditEvent) -> None:
        """Stores the task and appends ``audit`` to its tenant's audit trail (at the task's
        creation time) in the same transaction. Raises ``Conflict`` for an id already used."""
        ...

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]: ...

    async def page(
        self,
        tenant_id: TenantId,
        *,
        limit: int,
        where: TaskFilter | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[Task]:
        """Up to ``limit`` tasks matching ``where``, newest first by creation (then id, both
        descending), strictly after ``after`` (a creation time and an id) when given."""
        ...

    async def get(self, tenant_id: TenantId, task_id: str) -> Task | None: ...

    async def save(self, task: Task, *, audit: AuditEvent, at_ms: int) -> bool:
        """Replaces the stored task of that tenant and id; False (nothing written) when there
        is none."""
        ...

    async def delete(
        self, tenant_id: TenantId, task_id: str, *, audit: AuditEvent, at_ms: int
    ) -> bool: ...
