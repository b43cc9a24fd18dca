"""The scope a transaction runs in, shared by the SQL and in-memory units of work so both hold
tenant work to the same rule: a tenant's transaction touches that tenant's rows and no others."""

from __future__ import annotations

from dataclasses import dataclass

from application.errors import TenantScopeViolation
from domain.ids import TenantId


@dataclass(frozen=True, slots=True)
class TenantScope:
    tenant_id: TenantId


@dataclass(frozen=True, slots=True)
class KeyScope:
    """Authentication: the API key with this prefix, and its tenant."""

    prefix: str


@dataclass(frozen=True, slots=True)
class AdminScope:
    actor: str
    action: str


Scope = TenantScope | KeyScope | AdminScope


def check_tenant(scope: Scope, tenant_id: str) -> None:
    """Refuses an argument naming a tenant the transaction is not scoped to."""
    if isinstance(scope, AdminScope):
        return
    if isinstance(scope, KeyScope):
        raise TenantScopeViolation(
            "an authentication transaction reads only an API key and its tenant"
        )
    if tenant_id != scope.tenant_id:
        raise TenantScopeViolation("a tenant's transaction was asked for another tenant's rows")


def check_key(scope: Scope, prefix: str) -> None:
    if isinstance(scope, KeyScope) and prefix != scope.prefix:
        raise TenantScopeViolation("an authentication transaction reads only its own API key")
