"""Ports of the tenancy context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from domain.ids import TenantId
from domain.tenancy.model import AdminLogEntry, ApiKey, Tenant, TenantProfile, TenantStatus


class TenantRepository(Protocol):
    """Tenants. ``add`` raises ``Conflict`` when the slug is taken."""

    async def get(self, tenant_id: TenantId) -> Tenant | None: ...

    async def get_by_slug(self, slug: str) -> Tenant | None: ...

    async def add(self, tenant: Tenant) -> None: ...

    async def list(self, *, after: str | None = None, limit: int | None = None) -> list[Tenant]:
        """Tenants by slug; with ``after``, those whose slug sorts after it; at most ``limit``."""
        ...

    async def set_status(self, tenant_id: TenantId, status: TenantStatus) -> bool:
        """False when there is no such tenant."""
        ...

    async def set_profile(self, tenant_id: TenantId, profile: TenantProfile) -> bool:
        """False when there is no such tenant."""
        ...

    async def delete(self, tenant_id: TenantId) -> bool:
        """Removes the tenant and, by cascade, everything it owns."""
        ...


class ApiKeyRepository(Protocol):
    """API keys, found by their public prefix (authentication happens before a tenant is
    known)."""

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def add(self, key: ApiKey) -> None: ...

    async def list_for(self, tenant_id: TenantId) -> list[ApiKey]:
        """The tenant's keys, oldest first."""
        ...

    async def revoke(self, tenant_id: TenantId, key_id: str) -> bool:
        """False when the tenant has no such key (revoking twice is True twice)."""
        ...

    async def touch(self, tenant_id: TenantId, key_id: str, at_ms: int) -> None:
        """Records a use of the key."""
        ...


class AdminLog(Protocol):
    """The append-only record of cross-tenant transactions."""

    async def recent(self, limit: int) -> list[AdminLogEntry]: ...


class TokenVerifier(Protocol):
    """Verifies a bearer token issued by an identity provider (signature, issuer, audience,
    lifetime) and returns its claims; raises ``Unauthenticated`` when it does not hold."""

    async def verify(self, token: str) -> Mapping[str, Any]: ...


class TenantExport(Protocol):
    """Every row a tenant owns, table by table, as JSON-ready mappings (read in the tenant's
    own scope, so row-level security holds)."""

    def rows(self, tenant_id: TenantId) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...
