"""In-memory unit of work: the fast double the unit tests use, held to the same contract suite
as the SQL adapters."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from application.errors import Conflict
from domain.conversation.model import Message, Run, Thread
from domain.ids import RunId, TenantId, ThreadId
from domain.tenancy.model import ApiKey, Tenant


@dataclass
class _Store:
    tenants: dict[TenantId, Tenant] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    threads: dict[tuple[TenantId, ThreadId], Thread] = field(default_factory=dict)
    messages: dict[tuple[TenantId, ThreadId], list[Message]] = field(default_factory=dict)
    runs: dict[tuple[TenantId, RunId], Run] = field(default_factory=dict)


class MemoryThreadRepository:
    def __init__(self, store: _Store) -> None:
        self._s = store

    async def get(self, tenant_id: TenantId, thread_id: ThreadId) -> Thread | None:
        return self._s.threads.get((tenant_id, thread_id))

    async def add(self, thread: Thread) -> None:
        key = (thread.tenant_id, thread.id)
        if key in self._s.threads:
            raise Conflict(f"thread {thread.id} already exists")
        self._s.threads[key] = thread

    async def add_messages(
        self, tenant_id: TenantId, thread_id: ThreadId, messages: Sequence[Message]
    ) -> int:
        stored = self._s.messages.setdefault((tenant_id, thread_id), [])
        ids = {m.id for m in stored}
        added = 0
        for m in messages:
            if m.id not in ids:
                ids.add(m.id)
                stored.append(m)
                added += 1
        return added

    async def list_messages(self, tenant_id: TenantId, thread_id: ThreadId) -> list[Message]:
        return list(self._s.messages.get((tenant_id, thread_id), ()))


class MemoryRunRepository:
    def __init__(self, store: _Store) -> None:
        self._s = store

    async def get(self, tenant_id: TenantId, run_id: RunId) -> Run | None:
        run = self._s.runs.get((tenant_id, run_id))
        # A copy, as a database would hand out: changes count only through save().
        return copy.copy(run) if run is not None else None

    async def add(self, run: Run) -> None:
        key = (run.tenant_id, run.id)
        if key in self._s.runs:
            raise Conflict(f"run {run.id} already exists")
        self._s.runs[key] = copy.copy(run)

    async def save(self, run: Run) -> None:
        key = (run.tenant_id, run.id)
        if key in self._s.runs:
            self._s.runs[key] = copy.copy(run)


class MemoryTenantRepository:
    def __init__(self, store: _Store) -> None:
        self._s = store

    async def get(self, tenant_id: TenantId) -> Tenant | None:
        return self._s.tenants.get(tenant_id)

    async def get_by_slug(self, slug: str) -> Tenant | None:
        return next((t for t in self._s.tenants.values() if t.slug == slug), None)

    async def add(self, tenant: Tenant) -> None:
        if tenant.id in self._s.tenants or await self.get_by_slug(tenant.slug):
            raise Conflict(f"tenant {tenant.slug} already exists")
        self._s.tenants[tenant.id] = tenant

    async def list(self) -> list[Tenant]:
        return sorted(self._s.tenants.values(), key=lambda t: t.slug)


class MemoryApiKeyRepository:
    def __init__(self, store: _Store) -> None:
        self._s = store

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        return self._s.api_keys.get(prefix)

    async def add(self, key: ApiKey) -> None:
        if key.prefix in self._s.api_keys:
            raise Conflict("an API key with this prefix exists")
        self._s.api_keys[key.prefix] = key


class MemoryTransaction:
    def __init__(self, uow: MemoryUnitOfWork, staged: _Store) -> None:
        self._uow = uow
        self._staged = staged
        self.threads = MemoryThreadRepository(staged)
        self.runs = MemoryRunRepository(staged)
        self.tenants = MemoryTenantRepository(staged)
        self.api_keys = MemoryApiKeyRepository(staged)

    async def commit(self) -> None:
        self._uow._store = self._staged


class MemoryUnitOfWork:
    """Each transaction works on a deep copy of the store and replaces it on commit, so a
    transaction left without commit leaves no trace. Last commit wins (no isolation between
    concurrent transactions): enough for a test double, not for production."""

    def __init__(self) -> None:
        self._store = _Store()

    @asynccontextmanager
    async def transaction(self, tenant_id: TenantId | None) -> AsyncIterator[MemoryTransaction]:
        yield MemoryTransaction(self, copy.deepcopy(self._store))
