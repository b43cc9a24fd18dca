"""Ports of the quota context: rate limiting and run concurrency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from domain.ids import TenantId
from domain.quota.rate_limit import US_PER_S, RateLimitRule, RateOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class RateCheck:
    """One counter a request is held to. ``policy`` is the name clients see in the
    ``RateLimit`` headers (``tenant``, ``key``, ``address``); ``key`` names the counter."""

    policy: str
    key: str
    rule: RateLimitRule


@dataclass(frozen=True, slots=True, kw_only=True)
class RateResult:
    policy: str
    limit: int
    window_s: float
    remaining: int
    reset_s: float
    retry_after_s: float
    # Whether this counter had room (a request is admitted only when every counter has).
    allowed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RateDecision:
    allowed: bool
    results: tuple[RateResult, ...]
    # Decided without the limiter's store, which could not be reached (fail-open).
    degraded: bool = False

    @property
    def binding(self) -> RateResult | None:
        """The counter that decided: the refusing one that frees up last, else the one with
        the least room left."""
        if not self.results:
            return None
        refused = [r for r in self.results if not r.allowed]
        if refused:
            return max(refused, key=lambda r: r.retry_after_s)
        return min(self.results, key=lambda r: (r.remaining, -r.reset_s))

    @property
    def retry_after_s(self) -> float:
        b = self.binding
        return b.retry_after_s if b is not None and not self.allowed else 0.0


def decision_of(
    checks: Sequence[RateCheck], allowed: bool, outcomes: Sequence[RateOutcome]
) -> RateDecision:
    """The decision adapters report for the domain's outcomes, one per check."""
    return RateDecision(
        allowed=allowed,
        results=tuple(
            RateResult(
                policy=c.policy,
                limit=c.rule.limit,
                window_s=c.rule.window_s,
                remaining=o.remaining,
                reset_s=o.reset_us / US_PER_S,
                retry_after_s=o.retry_after_us / US_PER_S,
                allowed=o.allowed,
            )
            for c, o in zip(checks, outcomes, strict=True)
        ),
    )


class RateLimiter(Protocol):
    """Decides a request against its counters in one atomic step: admitted, it is counted in
    every counter; refused, in none. One call's counters share ``partition`` (with Redis, one
    cluster hash slot). Raises ``ServiceUnavailable`` when its store cannot be reached."""

    async def hit(
        self, partition: str, checks: Sequence[RateCheck], *, cost: int = 1
    ) -> RateDecision: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """A cap on things held at once: at most ``cap`` holders of ``key``."""

    key: str
    cap: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A holder's places under ``keys`` of one partition, to renew."""

    partition: str
    keys: tuple[str, ...]
    holder: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """A run's rate decision and whether it took its places (never when the rate refused)."""

    decision: RateDecision
    acquired: bool


class ConcurrencyGuard(Protocol):
    """Counts holders (runs) against caps. ``acquire`` takes a place under every slot or under
    none; a holder that is never released frees its places when its lease (``lease_s``) runs
    out, so a crashed instance cannot hold them for ever; ``renew`` extends live holders'
    leases, all of them in one call. Raises ``ServiceUnavailable`` when its store cannot be
    reached."""

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool: ...

    async def admit(
        self,
        partition: str,
        checks: Sequence[RateCheck],
        slots: Sequence[Slot],
        holder: str,
        *,
        lease_s: float,
    ) -> Admission:
        """In one atomic step: decides ``checks`` as ``RateLimiter.hit`` does (on the same
        counters) and, when they admit the request, ``acquire``s ``slots`` for ``holder``. A
        request the caps refuse has still been counted by the rate counters."""
        ...

    async def renew(self, leases: Sequence[Lease], *, lease_s: float) -> None:
        """Extends each lease whose holder still has its places; a holder that lost them (its
        lease ran out) does not get them back."""
        ...

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None: ...

    async def held(self, partition: str, key: str) -> int:
        """How many live holders ``key`` has."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyUsage:
    day: str  # YYYY-MM-DD, UTC
    model: str  # the model that answered (its name in the chain; "" when none did)
    runs: int
    input_tokens: int
    output_tokens: int


class UsageLedger(Protocol):
    """What a tenant's runs consumed, from the runs themselves: a run is counted once, with
    the usage it ended with (a run still going counts what it has recorded so far: nothing)."""

    async def tokens_since(self, tenant_id: TenantId, since_ms: int) -> int: ...

    async def daily(self, tenant_id: TenantId, since_ms: int, until_ms: int) -> list[DailyUsage]:
        """Per UTC day and model with any run created in [since_ms, until_ms), in day then
        model order."""
        ...
