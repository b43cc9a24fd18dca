"""Ports shared across bounded contexts."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from application.conversation.ports import RunRepository, ThreadRepository
from application.tenancy.ports import ApiKeyRepository, TenantRepository
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

    async def commit(self) -> None: ...


class UnitOfWork(Protocol):
    """Opens short transactions. ``tenant_id`` scopes the transaction to one tenant (on Postgres
    it sets the row-level-security context); ``None`` is the explicit cross-tenant path used
    only by authentication and administration."""

    def transaction(
        self, tenant_id: TenantId | None
    ) -> AbstractAsyncContextManager[Transaction, bool | None]: ...


class SchemaMigrator(Protocol):
    """Brings the configured database's schema to the newest revision, and compares it with
    what the code expects."""

    async def upgrade(self) -> None: ...

    async def check(self) -> list[str]:
        """The differences between the database's schema and the models; empty when they
        match."""
        ...
