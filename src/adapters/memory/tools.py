"""In-process tool policy, audit and task store."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from domain.ids import TenantId
from domain.tools.model import Task, TaskStatus, ToolInvocation


class StaticToolPolicy:
    """From settings: the tools every tenant may use (``*`` for all), with per-tenant lists
    that replace the default for that tenant."""

    def __init__(
        self,
        default: Sequence[str],
        per_tenant: Mapping[str, Sequence[str]],
        *,
        approval: Sequence[str] = (),
        approval_per_tenant: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._default = None if "*" in default else frozenset(default)
        self._tenants = {
            slug: None if "*" in names else frozenset(names) for slug, names in per_tenant.items()
        }
        self._approval = frozenset(approval)
        self._approval_tenants = {
            slug: frozenset(names) for slug, names in (approval_per_tenant or {}).items()
        }

    def allowed(self, tenant_slug: str) -> frozenset[str] | None:
        return self._tenants.get(tenant_slug, self._default)

    def needs_approval(self, tenant_slug: str, tool: str) -> bool:
        return tool in self._approval_tenants.get(tenant_slug, self._approval)


class MemoryToolAudit:
    """Keeps the latest ``capacity`` invocations in memory; the durable, hash-chained audit
    trail replaces it with the audit change."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.entries: deque[ToolInvocation] = deque(maxlen=capacity)

    async def record(self, invocation: ToolInvocation) -> None:
        self.entries.append(invocation)


class MemoryTaskRepository:
    def __init__(self) -> None:
        self._tasks: list[Task] = []

    async def add(self, task: Task) -> None:
        self._tasks.append(task)

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]:
        mine = [t for t in self._tasks if t.tenant_id == tenant_id and t.status is TaskStatus.OPEN]
        return sorted(mine, key=lambda t: (-t.created_at_ms, t.id))[:limit]
