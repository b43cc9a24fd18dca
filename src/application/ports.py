"""Ports shared across bounded contexts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from application.audit.ports import AuditTrail
from application.conversation.ports import RunRepository, ThreadRepository
from application.tenancy.ports import AdminLog, ApiKeyRepository, TenantRepository
from domain.ids import TenantId


class Clock(Protocol):
    """Wall-clock time in integer milliseconds since the epoch."""

    def now_ms(self) -> int: ...


class Transaction(Protocol):
    """Repositories bound to one database transaction. Nothing is durable until ``commit``;
    leaving the transaction without committing rolls everything back."""

    @property
    def threads(self) -> ThreadRepository: ...

    @property
    def runs(self) -> RunRepository: ...

    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def audit(self) -> AuditTrail: ...

    async def commit(self) -> None: ...


class AdminTransaction(Transaction, Protocol):
    """A cross-tenant transaction; it carries the log of such transactions."""

    @property
    def admin_log(self) -> AdminLog: ...


class UnitOfWork(Protocol):
    """Opens short transactions, each in exactly one scope:

    - ``transaction(tenant_id)``: one tenant's rows, and nothing else. Repositories refuse an
      argument naming another tenant (``TenantScopeViolation``); on Postgres the transaction
      also carries the row-level-security context, so a statement that forgot its filter still
      sees only this tenant's rows.
    - ``key_transaction(prefix)``: authentication, before a tenant is known; it sees the one
      API key with that prefix and that key's tenant.
    - ``admin_transaction(actor, action)``: the explicit cross-tenant path (provisioning,
      roll-ups). Every one is recorded in the admin log before it starts, whether or not it
      commits."""

    def transaction(
        self, tenant_id: TenantId
    ) -> AbstractAsyncContextManager[Transaction, bool | None]: ...

    def key_transaction(
        self, key_prefix: str
    ) -> AbstractAsyncContextManager[Transaction, bool | None]: ...

    def admin_transaction(
        self, actor: str, action: str
    ) -> AbstractAsyncContextManager[AdminTransaction, bool | None]: ...

    async def ping(self) -> None:
        """Raises ``ServiceUnavailable`` when the store cannot be reached."""
        ...

    async def isolation_problems(self) -> list[str]:
        """Why tenant isolation is weaker than designed (for example, a database role that can
        bypass row-level security); empty when it holds."""
        ...


class SchemaMigrator(Protocol):
    """Brings the configured database's schema to the newest revision, and compares it with
    what the code expects."""

    async def upgrade(self) -> None: ...

    async def check(self) -> list[str]:
        """The differences between the database's schema and the models; empty when they
        match."""
        ...


# Cached model answers carry this tag in their tenant's scope: answers are grounded on the
# knowledge base, so a change to it drops them.
KB_CACHE_TAG = "kb"


@dataclass(slots=True)
class CacheStats:
    """Counted per process: what a deployment exports as its hit ratio."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    invalidated: int = 0

    @property
    def hit_ratio(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


class Cache(Protocol):
    """Bytes by key within a scope (a tenant id, or ``global``), each entry with a time to live
    and tags; ``invalidate`` drops every entry of the scope carrying one of the tags, at once
    for every instance sharing the store. Entries may be evicted early, never served late.
    Raises ``ServiceUnavailable`` when the store cannot be reached (callers treat a read as a
    miss); counts hits and misses in ``stats``."""

    stats: CacheStats

    async def get(self, scope: str, key: str) -> bytes | None: ...

    async def set(
        self, scope: str, key: str, value: bytes, *, ttl_s: float, tags: Sequence[str] = ()
    ) -> None: ...

    async def invalidate(self, scope: str, tags: Sequence[str]) -> int:
        """Drops the scope's entries carrying any of ``tags``; returns how many."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ClaimOutcome(enum.StrEnum):
    STARTED = "started"  # the key is new: the caller runs the request and holds the key
    REPLAY = "replay"  # the same request already completed: its response is returned
    MISMATCH = "mismatch"  # the key was used for a different request
    IN_FLIGHT = "in_flight"  # the same request is still running elsewhere


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    response: StoredResponse | None = None


class IdempotencyStore(Protocol):
    """Outcomes of mutating requests by idempotency key, within a scope (one principal).
    ``claim`` is atomic: of concurrent claims of a new key exactly one is STARTED. A started
    key is held for ``lock_s`` (so a crashed holder cannot block retries for ever) until
    ``complete`` stores its response for ``retention_s`` or ``release`` forgets it; both act
    only for the fingerprint that holds the key. Once ``complete`` returns, every claim of the
    key, from any instance, replays. Raises ``ServiceUnavailable`` when the store cannot be
    reached."""

    async def claim(self, scope: str, key: str, fingerprint: str, *, lock_s: float) -> Claim: ...

    async def complete(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        *,
        retention_s: float,
    ) -> None: ...

    async def release(self, scope: str, key: str, fingerprint: str) -> None: ...
