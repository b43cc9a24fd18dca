"""Ports of the tenancy context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from domain.ids import TenantId
from domain.tenancy.model import AdminLogEntry, ApiKey, Tenant


class TenantRepository(Protocol):
    """Tenants. ``add`` raises ``Conflict`` when the slug is taken."""

    async def get(self, tenant_id: TenantId) -> Tenant | None: ...

    async def get_by_slug(self, slug: str) -> Tenant | None: ...

    async def add(self, tenant: Tenant) -> None: ...

    async def list(self) -> list[Tenant]: ...


class ApiKeyRepository(Protocol):
    """API keys, found by their public prefix (authentication happens before a tenant is
    known)."""

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def add(self, key: ApiKey) -> None: ...


class AdminLog(Protocol):
    """The append-only record of cross-tenant transactions."""

    async def recent(self, limit: int) -> list[AdminLogEntry]: ...


class TokenVerifier(Protocol):
    """Verifies a bearer token issued by an identity provider (signature, issuer, audience,
    lifetime) and returns its claims; raises ``Unauthenticated`` when it does not hold."""

    async def verify(self, token: str) -> Mapping[str, Any]: ...
