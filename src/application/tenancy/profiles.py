"""The tenants' operator settings as this process last saw them, for the hot path.

Rate limits, run caps, budgets, the tool list and the model chain are consulted on every
request and every model or tool call, synchronously; a database read there would cost more than
the work. So the profile travels with the tenant row that authentication reads anyway (at most
every credential-cache lifetime per credential), and an operator's change made through this
process applies here at once. Another process picks it up when it next reads the tenant: within
the credential cache's lifetime (``SBA_AUTH__CACHE_TTL_MS``)."""

from __future__ import annotations

from dataclasses import dataclass

from domain.tenancy.model import Tenant, TenantProfile, TenantStatus

_DEFAULT = TenantProfile()


@dataclass(frozen=True, slots=True)
class ProfileRules:
    """What an operator may set: the plans, tools and models this deployment defines."""

    plans: frozenset[str]
    tools: frozenset[str]
    models: frozenset[str]


class TenantProfiles:
    def __init__(self) -> None:
        self._by_slug: dict[str, TenantProfile] = {}
        self._suspended: set[str] = set()
        self._revoked: set[str] = set()

    def learn(self, tenant: Tenant) -> None:
        self._by_slug[tenant.slug] = tenant.profile
        if tenant.status is TenantStatus.ACTIVE:
            self._suspended.discard(tenant.id)
        else:
            self._suspended.add(tenant.id)

    def forget(self, tenant: Tenant) -> None:
        self._by_slug.pop(tenant.slug, None)
        self._suspended.add(tenant.id)

    def of(self, tenant_slug: str) -> TenantProfile:
        return self._by_slug.get(tenant_slug, _DEFAULT)

    def plan(self, tenant_slug: str) -> str | None:
        return self.of(tenant_slug).plan

    def revoked(self, subject: str) -> None:
        """A credential (``apikey:<id>``) revoked through this process: refused here at once."""
        self._revoked.add(subject)

    def refuses(self, tenant_id: str, subject: str) -> bool:
        """Whether a remembered principal has since been cut off through this process."""
        return tenant_id in self._suspended or subject in self._revoked
