"""In-memory unit of work: the fast double the unit tests use, held to the same contract suite
as the SQL adapters."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from adapters.memory.clock import SystemClock
from adapters.scope import AdminScope, KeyScope, Scope, TenantScope, check_key, check_tenant
from application.errors import Conflict
from application.ports import Clock
from domain.audit.model import AuditEntry, AuditEvent, AuditHead, chain
from domain.conversation.model import Message, Run, Thread
from domain.ids import RunId, TenantId, ThreadId
from domain.tenancy.model import AdminLogEntry, ApiKey, Tenant, TenantProfile, TenantStatus


@dataclass
class _Store:
    tenants: dict[TenantId, Tenant] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    threads: dict[tuple[TenantId, ThreadId], Thread] = field(default_factory=dict)
    messages: dict[tuple[TenantId, ThreadId], list[Message]] = field(default_factory=dict)
    runs: dict[tuple[TenantId, RunId], Run] = field(default_factory=dict)
    audit: dict[TenantId, list[AuditEntry]] = field(default_factory=dict)
    audit_heads: dict[TenantId, AuditHead] = field(default_factory=dict)
    # Names people gave threads, and the runs of deleted threads the usage ledger still counts.
    thread_titles: dict[tuple[TenantId, ThreadId], str] = field(default_factory=dict)
    deleted_runs: dict[tuple[TenantId, RunId], Run] = field(default_factory=dict)


class MemoryThreadRepository:
    def __init__(self, store: _Store, scope: Scope) -> None:
        self._s = store
        self._scope = scope

    async def get(self, tenant_id: TenantId, thread_id: ThreadId) -> Thread | None:
        check_tenant(self._scope, tenant_id)
        return self._s.threads.get((tenant_id, thread_id))

    async def add(self, thread: Thread) -> None:
        check_tenant(self._scope, thread.tenant_id)
        key = (thread.tenant_id, thread.id)
        if key in self._s.threads:
            raise Conflict(f"thread {thread.id} already exists")
        self._s.threads[key] = thread

    async def add_messages(
        self, tenant_id: TenantId, thread_id: ThreadId, messages: Sequence[Message]
    ) -> int:
        check_tenant(self._scope, tenant_id)
        stored = self._s.messages.setdefault((tenant_id, thread_id), [])
        ids = {m.id for m in stored}
        added = 0
        for m in messages:
            if m.id not in ids:
                ids.add(m.id)
                stored.append(m)
                added += 1
        return added

    async def list_messages(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> list[Message]:
        check_tenant(self._scope, tenant_id)
        stored = self._s.messages.get((tenant_id, thread_id), [])
        return list(stored[start : None if limit is None else start + limit])


class MemoryRunRepository:
    def __init__(self, store: _Store, scope: Scope) -> None:
        self._s = store
        self._scope = scope

    async def get(self, tenant_id: TenantId, run_id: RunId) -> Run | None:
        check_tenant(self._scope, tenant_id)
        run = self._s.runs.get((tenant_id, run_id))
        # A copy, as a database would hand out: changes count only through save().
        return copy.copy(run) if run is not None else None

    async def add(self, run: Run) -> None:
        check_tenant(self._scope, run.tenant_id)
        key = (run.tenant_id, run.id)
        if key in self._s.runs:
            raise Conflict(f"run {run.id} already exists")
        self._s.runs[key] = copy.copy(run)

    async def save(self, run: Run) -> None:
        check_tenant(self._scope, run.tenant_id)
        key = (run.tenant_id, run.id)
        if key in self._s.runs:
            self._s.runs[key] = copy.copy(run)

    async def unfinished(self, tenant_id: TenantId, *, limit: int) -> list[Run]:
        check_tenant(self._scope, tenant_id)
        live = [
            r for (t, _), r in self._s.runs.items() if t == tenant_id and not r.status.is_terminal
        ]
        live.sort(key=lambda r: (r.created_at_ms, r.id))
        return [copy.copy(r) for r in live[:limit]]


class MemoryTenantRepository:
    def __init__(self, store: _Store, scope: Scope) -> None:
        self._s = store
        self._scope = scope

    def _visible(self, tenant: Tenant) -> bool:
        scope = self._scope
        if isinstance(scope, TenantScope):
            return tenant.id == scope.tenant_id
        if isinstance(scope, KeyScope):
            key = self._s.api_keys.get(scope.prefix)
            return key is not None and key.tenant_id == tenant.id
        return True

    async def get(self, tenant_id: TenantId) -> Tenant | None:
        if isinstance(self._scope, TenantScope):
            check_tenant(self._scope, tenant_id)
        tenant = self._s.tenants.get(tenant_id)
        return tenant if tenant is not None and self._visible(tenant) else None

    async def get_by_slug(self, slug: str) -> Tenant | None:
        return next(
            (t for t in self._s.tenants.values() if t.slug == slug and self._visible(t)), None
        )

    async def add(self, tenant: Tenant) -> None:
        check_tenant(self._scope, tenant.id)
        if tenant.id in self._s.tenants or any(
            t.slug == tenant.slug for t in self._s.tenants.values()
        ):
            raise Conflict(f"tenant {tenant.slug} already exists")
        self._s.tenants[tenant.id] = tenant

    async def list(self, *, after: str | None = None, limit: int | None = None) -> list[Tenant]:
        found = sorted(
            (
                t
                for t in self._s.tenants.values()
                if self._visible(t) and (after is None or t.slug > after)
            ),
            key=lambda t: t.slug,
        )
        return found if limit is None else found[:limit]

    async def set_status(self, tenant_id: TenantId, status: TenantStatus) -> bool:
        check_tenant(self._scope, tenant_id)
        tenant = self._s.tenants.get(tenant_id)
        if tenant is None:
            return False
        tenant.status = status
        return True

    async def set_profile(self, tenant_id: TenantId, profile: TenantProfile) -> bool:
        check_tenant(self._scope, tenant_id)
        tenant = self._s.tenants.get(tenant_id)
        if tenant is None:
            return False
        tenant.profile = profile
        return True

    async def delete(self, tenant_id: TenantId) -> bool:
        check_tenant(self._scope, tenant_id)
        if self._s.tenants.pop(tenant_id, None) is None:
            return False
        s = self._s
        s.api_keys = {p: k for p, k in s.api_keys.items() if k.tenant_id != tenant_id}
        s.threads = {k: v for k, v in s.threads.items() if k[0] != tenant_id}
        s.messages = {k: v for k, v in s.messages.items() if k[0] != tenant_id}
        s.runs = {k: v for k, v in s.runs.items() if k[0] != tenant_id}
        s.thread_titles = {k: v for k, v in s.thread_titles.items() if k[0] != tenant_id}
        s.deleted_runs = {k: v for k, v in s.deleted_runs.items() if k[0] != tenant_id}
        s.audit.pop(tenant_id, None)
        s.audit_heads.pop(tenant_id, None)
        return True


class MemoryApiKeyRepository:
    def __init__(self, store: _Store, scope: Scope) -> None:
        self._s = store
        self._scope = scope

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        check_key(self._scope, prefix)
        key = self._s.api_keys.get(prefix)
        if key is not None and isinstance(self._scope, TenantScope):
            return key if key.tenant_id == self._scope.tenant_id else None
        return key

    async def add(self, key: ApiKey) -> None:
        check_tenant(self._scope, key.tenant_id)
        if key.prefix in self._s.api_keys:
            raise Conflict("an API key with this prefix exists")
        self._s.api_keys[key.prefix] = key

    async def list_for(self, tenant_id: TenantId) -> list[ApiKey]:
        check_tenant(self._scope, tenant_id)
        keys = [k for k in self._s.api_keys.values() if k.tenant_id == tenant_id]
        return sorted(keys, key=lambda k: (k.created_at_ms, k.id))

    def _replace(self, tenant_id: TenantId, key_id: str, **changes: object) -> bool:
        check_tenant(self._scope, tenant_id)
        for prefix, key in self._s.api_keys.items():
            if key.tenant_id == tenant_id and key.id == key_id:
                self._s.api_keys[prefix] = dataclasses.replace(key, **changes)  # type: ignore[arg-type]
                return True
        return False

    async def revoke(self, tenant_id: TenantId, key_id: str) -> bool:
        return self._replace(tenant_id, key_id, revoked=True)

    async def touch(self, tenant_id: TenantId, key_id: str, at_ms: int) -> None:
        self._replace(tenant_id, key_id, last_used_at_ms=at_ms)


class MemoryAdminLog:
    def __init__(self, entries: list[AdminLogEntry]) -> None:
        self._entries = entries

    async def recent(self, limit: int) -> list[AdminLogEntry]:
        return self._entries[::-1][:limit]


class MemoryAuditTrail:
    def __init__(self, store: _Store, scope: Scope) -> None:
        self._s = store
        self._scope = scope

    async def append(self, tenant_id: TenantId, event: AuditEvent, *, at_ms: int) -> AuditEntry:
        check_tenant(self._scope, tenant_id)
        entry = chain(tenant_id, self._s.audit_heads.get(tenant_id), at_ms, event)
        self._s.audit.setdefault(tenant_id, []).append(entry)
        self._s.audit_heads[tenant_id] = AuditHead(entry.seq, entry.hash)
        return entry

    async def head(self, tenant_id: TenantId) -> AuditHead | None:
        check_tenant(self._scope, tenant_id)
        return self._s.audit_heads.get(tenant_id)

    async def entries(
        self, tenant_id: TenantId, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        check_tenant(self._scope, tenant_id)
        return [e for e in self._s.audit.get(tenant_id, ()) if e.seq > after_seq][:limit]


class MemoryTransaction:
    def __init__(self, uow: MemoryUnitOfWork, staged: _Store, scope: Scope) -> None:
        self._uow = uow
        self._staged = staged
        self.threads = MemoryThreadRepository(staged, scope)
        self.runs = MemoryRunRepository(staged, scope)
        self.tenants = MemoryTenantRepository(staged, scope)
        self.api_keys = MemoryApiKeyRepository(staged, scope)
        self.audit = MemoryAuditTrail(staged, scope)

    async def commit(self) -> None:
        self._uow._store = self._staged


class MemoryAdminTransaction(MemoryTransaction):
    def __init__(self, uow: MemoryUnitOfWork, staged: _Store, scope: AdminScope) -> None:
        super().__init__(uow, staged, scope)
        self.admin_log = MemoryAdminLog(uow.admin_entries)


class MemoryUnitOfWork:
    """Each transaction works on a deep copy of the store and replaces it on commit, so a
    transaction left without commit leaves no trace. Last commit wins (no isolation between
    concurrent transactions): enough for a test double, not for production. Scopes are
    enforced as the SQL adapters enforce them."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._store = _Store()
        self._clock = clock or SystemClock()
        self.admin_entries: list[AdminLogEntry] = []

    @asynccontextmanager
    async def _open(self, scope: TenantScope | KeyScope) -> AsyncIterator[MemoryTransaction]:
        yield MemoryTransaction(self, copy.deepcopy(self._store), scope)

    @asynccontextmanager
    async def _open_admin(self, scope: AdminScope) -> AsyncIterator[MemoryAdminTransaction]:
        yield MemoryAdminTransaction(self, copy.deepcopy(self._store), scope)

    def transaction(self, tenant_id: TenantId) -> AbstractAsyncContextManager[MemoryTransaction]:
        return self._open(TenantScope(tenant_id))

    def key_transaction(self, key_prefix: str) -> AbstractAsyncContextManager[MemoryTransaction]:
        return self._open(KeyScope(key_prefix))

    def admin_transaction(
        self, actor: str, action: str
    ) -> AbstractAsyncContextManager[MemoryAdminTransaction]:
        self.admin_entries.append(
            AdminLogEntry(at_ms=self._clock.now_ms(), actor=actor, action=action)
        )
        return self._open_admin(AdminScope(actor, action))

    async def ping(self) -> None:
        return None

    async def isolation_problems(self) -> list[str]:
        return []
