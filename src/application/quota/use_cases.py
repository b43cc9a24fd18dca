"""Quota use cases: admit a request under the rate limits, hold a run's concurrency slots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from application.authz import authorize
from application.errors import InvalidInput, RateLimited, ServiceUnavailable
from application.ports import Clock
from application.quota.ports import (
    ConcurrencyGuard,
    DailyUsage,
    Lease,
    RateCheck,
    RateDecision,
    RateLimiter,
    Slot,
    UsageLedger,
)
from application.tenancy.profiles import TenantProfiles
from domain.billing.prices import PriceTable
from domain.quota.budget import DAY_MS, BudgetPeriod, BudgetState, period_bounds
from domain.quota.policy import Plan, QuotaPolicy, RouteClass
from domain.quota.rate_limit import RateLimitRule
from domain.tenancy.model import Principal, Scope

log = logging.getLogger("sba.quota")

WINDOW_S = 60.0
# A store outage is logged at most this often, however many requests it affects.
_LOG_EVERY_S = 10.0


@dataclass(slots=True)
class QuotaStats:
    """Counts a deployment exports: admissions, refusals, and decisions made without the store
    (``degraded``: admitted unchecked; ``unavailable``: refused with 503)."""

    admitted: int = 0
    degraded: int = 0
    refused: int = 0
    unavailable: int = 0
    _last_logged: float = 0.0

    def store_failed(self, what: str, exc: ServiceUnavailable, *, fail_open: bool) -> None:
        if fail_open:
            self.degraded += 1
        else:
            self.unavailable += 1
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            log.warning(
                "%s store unreachable (%s); failing %s (%d degraded, %d refused so far)",
                what,
                exc.message,
                "open" if fail_open else "closed",
                self.degraded,
                self.unavailable,
            )


def plan_of(policy: QuotaPolicy, profiles: TenantProfiles | None, tenant_slug: str) -> Plan:
    """The tenant's plan, the operator's assignment first."""
    return policy.plan_for(tenant_slug, profiles.plan(tenant_slug) if profiles else None)


class AdmitRequest:
    """Holds a request to the rate limits of its plan: by client address before
    authentication, then by tenant and principal together (one atomic decision). When the
    limiter's store cannot be reached it fails open (admits, counted and logged) or closed
    (503), as configured; either way the client gets a clean answer."""

    def __init__(
        self,
        limiter: RateLimiter,
        policy: QuotaPolicy,
        *,
        fail_open: bool,
        profiles: TenantProfiles | None = None,
    ) -> None:
        self._limiter = limiter
        self._policy = policy
        self._profiles = profiles
        self._fail_open = fail_open
        self._rules: dict[int, RateLimitRule] = {}
        self.stats = QuotaStats()

    def _rule(self, per_minute: int) -> RateLimitRule:
        rule = self._rules.get(per_minute)
        if rule is None:
            rule = RateLimitRule.sliding(
                limit=per_minute, window_s=WINDOW_S, burst_ratio=self._policy.burst_ratio
            )
            self._rules[per_minute] = rule
        return rule

    async def address(self, address: str) -> RateDecision | None:
        per_minute = self._policy.address_per_minute
        if not per_minute:
            return None
        check = RateCheck(policy="address", key="all", rule=self._rule(per_minute))
        return await self._decide(f"a:{address}", (check,), f"client address {address}")

    async def principal(self, principal: Principal, route: RouteClass) -> RateDecision | None:
        checks = self.checks(principal, route)
        if not checks:
            return None
        return await self._decide(
            f"t:{principal.tenant_id}", checks, f"tenant {principal.tenant_slug}"
        )

    def checks(self, principal: Principal, route: RouteClass) -> list[RateCheck]:
        """The counters of the principal's plan for the route class (partition
        ``t:<tenant id>``)."""
        plan = plan_of(self._policy, self._profiles, principal.tenant_slug)
        checks: list[RateCheck] = []
        # Counted per plan: a tenant moved to another plan starts on its limits afresh, instead
        # of carrying the old plan's debt (or credit) over.
        if tenant_limit := plan.tenant_limit(route):
            checks.append(
                RateCheck(
                    policy="tenant", key=f"{route}@{plan.name}", rule=self._rule(tenant_limit)
                )
            )
        if principal_limit := plan.principal_limit(route):
            checks.append(
                RateCheck(
                    policy="key",
                    key=f"{route}@{plan.name}:p:{principal.subject}",
                    rule=self._rule(principal_limit),
                )
            )
        return checks

    async def _decide(self, partition: str, checks: Sequence[RateCheck], who: str) -> RateDecision:
        try:
            decision = await self._limiter.hit(partition, checks)
        except ServiceUnavailable as exc:
            return self.unavailable(exc)
        return self.judge(decision, who)

    def unavailable(self, exc: ServiceUnavailable) -> RateDecision:
        """The decision when the limiter's store cannot be reached: admitted unchecked
        (fail-open) or ``ServiceUnavailable`` (fail-closed)."""
        self.stats.store_failed("rate limiter", exc, fail_open=self._fail_open)
        if not self._fail_open:
            raise ServiceUnavailable(
                "rate limiting is unavailable; try again shortly", code="limiter_unavailable"
            ) from exc
        return RateDecision(allowed=True, results=(), degraded=True)

    def judge(self, decision: RateDecision, who: str) -> RateDecision:
        """Counts the decision; raises ``RateLimited`` when it refused."""
        if not decision.allowed:
            self.stats.refused += 1
            binding = decision.binding
            assert binding is not None
            raise RateLimited(
                f"{who}: the {binding.policy} limit of {binding.limit} requests per "
                f"{binding.window_s:g} s is used up",
                retry_after_s=decision.retry_after_s,
                decision=decision,
            )
        self.stats.admitted += 1
        return decision


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlaces:
    """What a run was admitted with: the keys of its places (to renew and release) and the
    decision of its rate counters (``None`` when it is held to none)."""

    keys: list[str]
    rate: RateDecision | None = None


class RunSlots:
    """Caps the runs a tenant (and a principal) execute at once. A run takes its places before
    it is recorded and gives them back however it ends; its lease is renewed while it runs, so
    places held by a crashed instance come back when the lease runs out. With ``rates``, a run
    is also held to its plan's rate limits for starting runs (route class ``runs``), decided
    with its places in one call to the guard."""

    def __init__(
        self,
        guard: ConcurrencyGuard,
        policy: QuotaPolicy,
        *,
        lease_s: float,
        fail_open: bool = True,
        profiles: TenantProfiles | None = None,
        rates: AdmitRequest | None = None,
    ) -> None:
        self._rates = rates
        self._guard = guard
        self._policy = policy
        self._profiles = profiles
        self.lease_s = lease_s
        self._fail_open = fail_open
        self.stats = QuotaStats()
        # Runs executing here, whose leases one background task renews every third of a lease.
        self._live: dict[tuple[str, str], list[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    def slots(self, tenant_slug: str, subject: str) -> list[Slot]:
        plan = plan_of(self._policy, self._profiles, tenant_slug)
        slots: list[Slot] = []
        if plan.concurrent_runs:
            slots.append(Slot(key="runs", cap=plan.concurrent_runs))
        if plan.concurrent_runs_per_principal:
            slots.append(Slot(key=f"runs:p:{subject}", cap=plan.concurrent_runs_per_principal))
        return slots

    async def acquire(self, principal: Principal, holder: str) -> RunPlaces:
        """Decides the run's rate counters and takes its places. Raises ``RateLimited``: code
        ``rate_limited`` when a counter refuses (no place is taken), ``concurrency_limited``
        when a cap is reached. When the store cannot be reached, the rate limits fail as
        ``rates`` is configured, and the caps are not checked (fail-open: the run goes on
        uncounted) or the run is refused with 503 (fail-closed)."""
        slots = self.slots(principal.tenant_slug, principal.subject)
        checks = self._rates.checks(principal, RouteClass.RUNS) if self._rates else []
        if not slots and not checks:
            return RunPlaces(keys=[])
        try:
            admission = await self._guard.admit(
                f"t:{principal.tenant_id}", checks, slots, holder, lease_s=self.lease_s
            )
        except ServiceUnavailable as exc:
            rate = self._rates.unavailable(exc) if self._rates and checks else None
            if slots:
                self.stats.store_failed("concurrency guard", exc, fail_open=self._fail_open)
                if not self._fail_open:
                    raise ServiceUnavailable(
                        "run concurrency cannot be checked; try again shortly",
                        code="limiter_unavailable",
                    ) from exc
            return RunPlaces(keys=[], rate=rate)
        rate = None
        if self._rates and checks:
            rate = self._rates.judge(admission.decision, f"tenant {principal.tenant_slug}")
        if not slots:
            return RunPlaces(keys=[], rate=rate)
        if not admission.acquired:
            self.stats.refused += 1
            caps = ", ".join(f"{s.cap} ({'tenant' if s.key == 'runs' else 'key'})" for s in slots)
            raise RateLimited(
                f"too many runs in progress for tenant {principal.tenant_slug}: at most {caps}",
                retry_after_s=1.0,
                code="concurrency_limited",
            )
        self.stats.admitted += 1
        return RunPlaces(keys=[s.key for s in slots], rate=rate)

    def keep(self, tenant_id: str, keys: Sequence[str], holder: str) -> None:
        """Keeps renewing the holder's lease until it is released."""
        if not keys:
            return
        self._live[(tenant_id, holder)] = list(keys)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_all())

    async def _renew_all(self) -> None:
        while self._live:
            await asyncio.sleep(self.lease_s / 3)
            leases = [
                Lease(partition=f"t:{tenant_id}", keys=tuple(keys), holder=holder)
                for (tenant_id, holder), keys in self._live.items()
            ]
            try:
                await self._guard.renew(leases, lease_s=self.lease_s)
            except ServiceUnavailable:
                continue  # the store is down; the next round tries again

    async def end(self, tenant_id: str, keys: Sequence[str], holder: str) -> None:
        """A kept holder's run ended: gives its places back, once however often it is told."""
        if self._live.pop((tenant_id, holder), None) is not None:
            await self.release(tenant_id, keys, holder)

    async def release(self, tenant_id: str, keys: Sequence[str], holder: str) -> None:
        """Gives the places back; when the store cannot be reached they come back with the
        lease's expiry instead."""
        self._live.pop((tenant_id, holder), None)
        if not keys:
            return
        try:
            await self._guard.release(f"t:{tenant_id}", keys, holder)
        except ServiceUnavailable as exc:
            log.warning(
                "could not release run slots of %s now (%s); the lease frees them",
                holder,
                exc.message,
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    state: BudgetState
    used_tokens: int
    soft_tokens: int
    hard_tokens: int
    period: BudgetPeriod
    period_start_ms: int
    period_end_ms: int

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "usedTokens": self.used_tokens,
            "softTokens": self.soft_tokens,
            "hardTokens": self.hard_tokens,
            "period": self.period.value,
            "periodStartMs": self.period_start_ms,
            "periodEndMs": self.period_end_ms,
        }


class BudgetGuard:
    """Holds new runs to the tenant's token budget. Usage is read from the ledger (the runs)
    and remembered per tenant for ``ttl_ms``, so a busy tenant costs one ledger read per
    ``ttl_ms``, not per run; a run may therefore start up to ``ttl_ms`` after the budget ran
    out. Tenants without a budget cost nothing."""

    def __init__(
        self,
        ledger: UsageLedger,
        policy: QuotaPolicy,
        clock: Clock,
        *,
        ttl_ms: int = 2_000,
        profiles: TenantProfiles | None = None,
    ) -> None:
        self._ledger = ledger
        self._policy = policy
        self._profiles = profiles
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._cache: dict[str, tuple[int, int, int]] = {}  # tenant -> (start, used, read at)

    async def status(self, principal: Principal) -> BudgetStatus | None:
        budget = plan_of(self._policy, self._profiles, principal.tenant_slug).budget
        if not budget.enabled:
            return None
        now = self._clock.now_ms()
        start, end = period_bounds(budget.period, now)
        cached = self._cache.get(principal.tenant_id)
        if cached is not None and cached[0] == start and now - cached[2] < self._ttl_ms:
            used = cached[1]
        else:
            used = await self._ledger.tokens_since(principal.tenant_id, start)
            self._cache[principal.tenant_id] = (start, used, now)
        return BudgetStatus(
            state=budget.state(used),
            used_tokens=used,
            soft_tokens=budget.soft_tokens,
            hard_tokens=budget.hard_tokens,
            period=budget.period,
            period_start_ms=start,
            period_end_ms=end,
        )

    async def admit(self, principal: Principal) -> BudgetStatus | None:
        """The budget's status for a new run; raises ``RateLimited`` (``budget_exhausted``)
        when the hard limit is reached."""
        status = await self.status(principal)
        if status is not None and status.state is BudgetState.HARD:
            raise RateLimited(
                f"the tenant used {status.used_tokens} of its {status.hard_tokens} tokens "
                f"this {status.period.value}; new runs start again when the period ends",
                retry_after_s=(status.period_end_ms - self._clock.now_ms()) / 1000,
                code="budget_exhausted",
            )
        return status


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageLine:
    """Usage of one day or one model, with its cost (None: no price known for any of it)."""

    key: str
    runs: int
    input_tokens: int
    output_tokens: int
    cost: Decimal | None


def _lines(
    rows: Sequence[DailyUsage], prices: PriceTable, key: Callable[[DailyUsage], str]
) -> list[UsageLine]:
    grouped: dict[str, list[DailyUsage]] = {}
    for row in rows:
        grouped.setdefault(key(row), []).append(row)
    lines = []
    for name in sorted(grouped):
        group = grouped[name]
        costs = [prices.cost(r.model, r.input_tokens, r.output_tokens) for r in group]
        priced = [c for c in costs if c is not None]
        lines.append(
            UsageLine(
                key=name,
                runs=sum(r.runs for r in group),
                input_tokens=sum(r.input_tokens for r in group),
                output_tokens=sum(r.output_tokens for r in group),
                cost=sum(priced, Decimal(0)) if priced else None,
            )
        )
    return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    since_ms: int
    until_ms: int
    rows: list[DailyUsage]
    prices: PriceTable
    budget: BudgetStatus | None

    @property
    def days(self) -> list[UsageLine]:
        return _lines(self.rows, self.prices, lambda r: r.day)

    @property
    def models(self) -> list[UsageLine]:
        return _lines(self.rows, self.prices, lambda r: r.model)

    @property
    def total(self) -> UsageLine:
        lines = _lines(self.rows, self.prices, lambda r: "total")
        if lines:
            return lines[0]
        return UsageLine(key="total", runs=0, input_tokens=0, output_tokens=0, cost=None)


class GetUsage:
    """A tenant's usage per UTC day over a range (default: the current month), with its budget."""

    MAX_DAYS = 400

    def __init__(
        self,
        ledger: UsageLedger,
        budget: BudgetGuard,
        clock: Clock,
        prices: PriceTable | None = None,
    ) -> None:
        self._ledger = ledger
        self._budget = budget
        self._clock = clock
        self._prices = prices or PriceTable()

    async def __call__(
        self, principal: Principal, since_ms: int | None = None, until_ms: int | None = None
    ) -> UsageReport:
        authorize(principal, Scope.USAGE_READ, write=False, action="read usage")
        start, end = period_bounds(BudgetPeriod.MONTH, self._clock.now_ms())
        since = start if since_ms is None else since_ms
        until = end if until_ms is None else until_ms
        if until <= since:
            raise InvalidInput("the range must end after it starts")
        if until - since > self.MAX_DAYS * DAY_MS:
            raise InvalidInput(f"the range is at most {self.MAX_DAYS} days")
        rows = await self._ledger.daily(principal.tenant_id, since, until)
        return UsageReport(
            since_ms=since,
            until_ms=until,
            rows=rows,
            prices=self._prices,
            budget=await self._budget.status(principal),
        )
