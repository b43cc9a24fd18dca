"""Ports of the tools context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from application.conversation.ports import ToolSpec
from domain.ids import TenantId
from domain.tools.model import Task, ToolInvocation, ToolOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    tenant_id: TenantId
    tenant_slug: str
    subject: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """What goes back to the model: ``content`` is JSON text, an error object when not ok."""

    content: str
    outcome: ToolOutcome

    @property
    def ok(self) -> bool:
        return self.outcome is ToolOutcome.OK


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
    """Records every invocation, allowed or not."""

    async def record(self, invocation: ToolInvocation) -> None: ...


class TaskRepository(Protocol):
    async def add(self, task: Task) -> None: ...

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]: ...
