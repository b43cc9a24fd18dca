"""The operator's per-tenant tool list (the tenant profile) over the deployment's policy."""

from __future__ import annotations

from application.tenancy.profiles import TenantProfiles
from application.tools.ports import ToolPolicy


class ProfiledToolPolicy:
    """A tenant whose profile lists tools may use those and no others; every other tenant
    follows ``inner`` (the settings). Which tools wait for approval stays ``inner``'s."""

    def __init__(self, inner: ToolPolicy, profiles: TenantProfiles) -> None:
        self._inner = inner
        self._profiles = profiles

    def allowed(self, tenant_slug: str) -> frozenset[str] | None:
        tools = self._profiles.of(tenant_slug).tools
        return tools if tools is not None else self._inner.allowed(tenant_slug)

    def needs_approval(self, tenant_slug: str, tool: str) -> bool:
        return self._inner.needs_approval(tenant_slug, tool)
