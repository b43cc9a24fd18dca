"""Quota use cases: admit a request under the rate limits, hold a run's concurrency slots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from application.errors import RateLimited, ServiceUnavailable
from application.quota.ports import ConcurrencyGuard, RateCheck, RateDecision, RateLimiter, Slot
from domain.quota.policy import QuotaPolicy, RouteClass
from domain.quota.rate_limit import RateLimitRule
from domain.tenancy.model import Principal

log = logging.getLogger("sba.quota")

WINDOW_S = 60.0
# A store outage is logged at most this often, however many requests it affects.
_LOG_EVERY_S = 10.0


@dataclass(slots=True)
class QuotaStats:
    """Counts a deployment exports: decisions made without the store, refusals."""

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


class AdmitRequest:
    """Holds a request to the rate limits of its plan: by client address before
    authentication, then by tenant and principal together (one atomic decision). When the
    limiter's store cannot be reached it fails open (admits, counted and logged) or closed
    (503), as configured; either way the client gets a clean answer."""

    def __init__(self, limiter: RateLimiter, policy: QuotaPolicy, *, fail_open: bool) -> None:
        self._limiter = limiter
        self._policy = policy
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
        plan = self._policy.plan_for(principal.tenant_slug)
        checks: list[RateCheck] = []
        if tenant_limit := plan.tenant_limit(route):
            checks.append(RateCheck(policy="tenant", key=route, rule=self._rule(tenant_limit)))
        if principal_limit := plan.principal_limit(route):
            checks.append(
                RateCheck(
                    policy="key",
                    key=f"{route}:p:{principal.subject}",
                    rule=self._rule(principal_limit),
                )
            )
        if not checks:
            return None
        return await self._decide(
            f"t:{principal.tenant_id}", checks, f"tenant {principal.tenant_slug}"
        )

    async def _decide(self, partition: str, checks: Sequence[RateCheck], who: str) -> RateDecision:
        try:
            decision = await self._limiter.hit(partition, checks)
        except ServiceUnavailable as exc:
            self.stats.store_failed("rate limiter", exc, fail_open=self._fail_open)
            if not self._fail_open:
                raise ServiceUnavailable(
                    "rate limiting is unavailable; try again shortly", code="limiter_unavailable"
                ) from exc
            return RateDecision(allowed=True, results=(), degraded=True)
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
        return decision


class RunSlots:
    """Caps the runs a tenant (and a principal) execute at once. A run takes its places before
    it is recorded and gives them back however it ends; its lease is renewed while it runs, so
    places held by a crashed instance come back when the lease runs out."""

    def __init__(
        self,
        guard: ConcurrencyGuard,
        policy: QuotaPolicy,
        *,
        lease_s: float,
        fail_open: bool = True,
    ) -> None:
        self._guard = guard
        self._policy = policy
        self.lease_s = lease_s
        self._fail_open = fail_open
        self.stats = QuotaStats()
        # Runs executing here, whose leases one background task renews every third of a lease.
        self._live: dict[tuple[str, str], list[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    def slots(self, tenant_slug: str, subject: str) -> list[Slot]:
        plan = self._policy.plan_for(tenant_slug)
        slots: list[Slot] = []
        if plan.concurrent_runs:
            slots.append(Slot(key="runs", cap=plan.concurrent_runs))
        if plan.concurrent_runs_per_principal:
            slots.append(Slot(key=f"runs:p:{subject}", cap=plan.concurrent_runs_per_principal))
        return slots

    async def acquire(self, principal: Principal, holder: str) -> list[str]:
        """Takes the run's places; returns their keys (to renew and release). Raises
        ``RateLimited`` (code ``concurrency_limited``) when a cap is reached. When the store
        cannot be reached the cap is not checked (fail-open: the run goes on uncounted) or the
        run is refused with 503 (fail-closed)."""
        slots = self.slots(principal.tenant_slug, principal.subject)
        if not slots:
            return []
        try:
            acquired = await self._guard.acquire(
                f"t:{principal.tenant_id}", slots, holder, lease_s=self.lease_s
            )
        except ServiceUnavailable as exc:
            self.stats.store_failed("concurrency guard", exc, fail_open=self._fail_open)
            if not self._fail_open:
                raise ServiceUnavailable(
                    "run concurrency cannot be checked; try again shortly",
                    code="limiter_unavailable",
                ) from exc
            return []
        if not acquired:
            self.stats.refused += 1
            caps = ", ".join(f"{s.cap} ({'tenant' if s.key == 'runs' else 'key'})" for s in slots)
            raise RateLimited(
                f"too many runs in progress for tenant {principal.tenant_slug}: at most {caps}",
                retry_after_s=1.0,
                code="concurrency_limited",
            )
        return [s.key for s in slots]

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
            for (tenant_id, holder), keys in list(self._live.items()):
                try:
                    await self._guard.renew(f"t:{tenant_id}", keys, holder, lease_s=self.lease_s)
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
