"""Rate and concurrency policy: which limits apply to a request, by tenant plan and route class.

Requests fall into route classes: ``runs`` (starting an agent run, the expensive path),
``read`` (GET) and ``write`` (other changes). A plan sets, per minute, what one tenant and
what one principal (an API key or a signed-in user) may send of each class, and how many runs
may execute at once. Zero means no limit of that kind.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.errors import InvariantViolated
from domain.quota.budget import TokenBudget


class RouteClass(enum.StrEnum):
    RUNS = "runs"
    READ = "read"
    WRITE = "write"


def _check_routes(what: str, routes: Mapping[str, int]) -> None:
    for name, value in routes.items():
        if name not in RouteClass.__members__.values():
            known = ", ".join(sorted(RouteClass))
            raise InvariantViolated(f"{what}: unknown route class {name!r} (known: {known})")
        if value < 0:
            raise InvariantViolated(f"{what}: a limit cannot be negative ({name}={value})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    name: str
    tenant_per_minute: int = 600
    tenant_routes: Mapping[str, int] = field(default_factory=dict)
    principal_per_minute: int = 0
    principal_routes: Mapping[str, int] = field(default_factory=dict)
    concurrent_runs: int = 0
    concurrent_runs_per_principal: int = 0
    budget: TokenBudget = field(default_factory=TokenBudget)

    def __post_init__(self) -> None:
        for label, value in (
            ("tenant_per_minute", self.tenant_per_minute),
            ("principal_per_minute", self.principal_per_minute),
            ("concurrent_runs", self.concurrent_runs),
            ("concurrent_runs_per_principal", self.concurrent_runs_per_principal),
        ):
            if value < 0:
                raise InvariantViolated(f"plan {self.name}: {label} cannot be negative")
        _check_routes(f"plan {self.name}", self.tenant_routes)
        _check_routes(f"plan {self.name}", self.principal_routes)

    def tenant_limit(self, route: RouteClass) -> int:
        return self.tenant_routes.get(route, self.tenant_per_minute)

    def principal_limit(self, route: RouteClass) -> int:
        return self.principal_routes.get(route, self.principal_per_minute)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaPolicy:
    """The deployment's plans. A tenant is on the plan ``tenant_plans`` names for its slug,
    else on ``default``; ``address_per_minute`` limits every client address before it has
    authenticated (zero: off)."""

    default: Plan
    plans: Mapping[str, Plan] = field(default_factory=dict)
    tenant_plans: Mapping[str, str] = field(default_factory=dict)
    address_per_minute: int = 0
    burst_ratio: float = 0.2

    def __post_init__(self) -> None:
        for slug, name in self.tenant_plans.items():
            if name not in self.plans and name != self.default.name:
                raise InvariantViolated(f"tenant {slug} is on plan {name!r}, which is not defined")
        if self.address_per_minute < 0:
            raise InvariantViolated("address_per_minute cannot be negative")
        if not 0 < self.burst_ratio <= 1:
            raise InvariantViolated("burst_ratio must be above 0 and at most 1")

    def plan_for(self, tenant_slug: str, assigned: str | None = None) -> Plan:
        """The tenant's plan: the one an operator ``assigned`` it, else the one settings name
        for its slug, else the default."""
        name = assigned or self.tenant_plans.get(tenant_slug)
        if name is None:
            return self.default
        return self.plans.get(name, self.default)

    @property
    def names(self) -> frozenset[str]:
        return frozenset([self.default.name, *self.plans])
