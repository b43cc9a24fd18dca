"""In-process tool policy, audit and task store."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from adapters.memory.persistence import MemoryUnitOfWork
from application.errors import Conflict
from application.ports import UnitOfWork
from application.tools.ports import TaskFilter
from domain.audit.model import AuditEvent
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


LATENCY_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)


class MemoryToolAudit:
    """Keeps the latest ``capacity`` invocations in memory, and a latency histogram per tool
    (cumulative counts per upper bound in ms, Prometheus style, over every invocation). The
    durable record is the tenant's audit trail (``tool.called``, written with the run's end)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.entries: deque[ToolInvocation] = deque(maxlen=capacity)
        self._histograms: dict[str, list[int]] = {}

    async def record(self, invocation: ToolInvocation) -> None:
        self.entries.append(invocation)
        counts = self._histograms.setdefault(invocation.tool, [0] * (len(LATENCY_BUCKETS_MS) + 1))
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if invocation.latency_ms <= bound:
                counts[i] += 1
        counts[-1] += 1  # +Inf

    def latency_histogram(self, tool: str) -> dict[str, int]:
        counts = self._histograms.get(tool, [0] * (len(LATENCY_BUCKETS_MS) + 1))
        labels = [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]
        return dict(zip(labels, counts, strict=True))


class MemoryTaskRepository:
    """Audit entries go to ``uow``'s trail (a private one by default), committed with the
    task."""

    def __init__(self, uow: UnitOfWork | None = None) -> None:
        self._tasks: list[Task] = []
        self._uow: UnitOfWork = uow if uow is not None else MemoryUnitOfWork()

    async def add(self, task: Task, *, audit: AuditEvent) -> None:
        if any(t.tenant_id == task.tenant_id and t.id == task.id for t in self._tasks):
            raise Conflict(f"task {task.id} already exists")
        async with self._uow.transaction(task.tenant_id) as tx:
            await tx.audit.append(task.tenant_id, audit, at_ms=task.created_at_ms)
            self._tasks.append(task)
            await tx.commit()

    async def list_open(self, tenant_id: TenantId, *, limit: int) -> list[Task]:
        mine = [t for t in self._tasks if t.tenant_id == tenant_id and t.status is TaskStatus.OPEN]
        return sorted(mine, key=lambda t: (-t.created_at_ms, t.id))[:limit]

    async def page(
        self,
        tenant_id: TenantId,
        *,
        limit: int,
        where: TaskFilter | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[Task]:
        w = where or TaskFilter()

        def matches(t: Task) -> bool:
            return (
                t.tenant_id == tenant_id
                and (w.status is None or t.status is w.status)
                and (w.assignee is None or t.assignee == w.assignee)
                and (w.due_from is None or (t.due is not None and t.due >= w.due_from))
                and (w.due_to is None or (t.due is not None and t.due <= w.due_to))
                and (after is None or (t.created_at_ms, t.id) < after)
            )

        found = sorted(filter(matches, self._tasks), key=lambda t: (t.created_at_ms, t.id))
        return found[::-1][:limit]

    async def get(self, tenant_id: TenantId, task_id: str) -> Task | None:
        return next((t for t in self._tasks if (t.tenant_id, t.id) == (tenant_id, task_id)), None)

    def _index(self, tenant_id: TenantId, task_id: str) -> int | None:
        return next(
            (n for n, t in enumerate(self._tasks) if (t.tenant_id, t.id) == (tenant_id, task_id)),
            None,
        )

    async def save(self, task: Task, *, audit: AuditEvent, at_ms: int) -> bool:
        n = self._index(task.tenant_id, task.id)
        if n is None:
            return False
        async with self._uow.transaction(task.tenant_id) as tx:
            await tx.audit.append(task.tenant_id, audit, at_ms=at_ms)
            self._tasks[n] = task
            await tx.commit()
        return True

    async def delete(
        self, tenant_id: TenantId, task_id: str, *, audit: AuditEvent, at_ms: int
    ) -> bool:
        n = self._index(tenant_id, task_id)
        if n is None:
            return False
        async with self._uow.transaction(tenant_id) as tx:
            await tx.audit.append(tenant_id, audit, at_ms=at_ms)
            del self._tasks[n]
            await tx.commit()
        return True
