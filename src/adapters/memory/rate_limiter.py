"""In-process rate limiter and concurrency guard over the domain's GCRA."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from application.quota.ports import (
    Admission,
    Lease,
    RateCheck,
    RateDecision,
    Slot,
    decision_of,
)
from domain.quota.rate_limit import decide_all


def monotonic_us() -> int:
    return time.monotonic_ns() // 1_000


class MemoryRateLimiter:
    """Per-process state: two instances each enforce their own limit (Redis shares one)."""

    def __init__(
        self, *, clock_us: Callable[[], int] = monotonic_us, max_keys: int = 100_000
    ) -> None:
        self._tat: dict[tuple[str, str], int] = {}
        self._clock_us = clock_us
        self._max_keys = max_keys

    async def hit(
        self, partition: str, checks: Sequence[RateCheck], *, cost: int = 1
    ) -> RateDecision:
        now = self._clock_us()
        keys = [(partition, c.key) for c in checks]
        tat = self._tat
        allowed, outcomes = decide_all(
            [(c.rule, tat.get(k, 0)) for c, k in zip(checks, keys, strict=True)], now, cost
        )
        if allowed:
            if len(tat) + len(keys) > self._max_keys:
                self._evict(now)
            for k, o in zip(keys, outcomes, strict=True):
                tat[k] = o.tat_us
        return decision_of(checks, allowed, outcomes)

    def _evict(self, now: int) -> None:
        # Keys whose theoretical arrival time has passed carry no state worth keeping.
        for k in [k for k, t in self._tat.items() if t <= now]:
            del self._tat[k]


class MemoryConcurrencyGuard:
    """Holders per slot with lease deadlines on the monotonic clock; expired leases are
    dropped whenever a slot is looked at. ``admit`` counts on ``limiter`` (give it the
    process's rate limiter, so that both share their counters)."""

    def __init__(
        self,
        *,
        clock_us: Callable[[], int] = monotonic_us,
        limiter: MemoryRateLimiter | None = None,
    ) -> None:
        self._holders: dict[tuple[str, str], dict[str, int]] = {}
        self._clock_us = clock_us
        self._limiter = limiter if limiter is not None else MemoryRateLimiter(clock_us=clock_us)

    def _live(self, partition: str, key: str, now: int) -> dict[str, int]:
        holders = self._holders.get((partition, key))
        if holders is None:
            holders = self._holders[(partition, key)] = {}
        else:
            for h in [h for h, deadline in holders.items() if deadline <= now]:
                del holders[h]
        return holders

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool:
        now = self._clock_us()
        live = [self._live(partition, s.key, now) for s in slots]
        if any(len(h) >= s.cap and holder not in h for h, s in zip(live, slots, strict=True)):
            return False
        deadline = now + int(lease_s * 1_000_000)
        for h in live:
            h[holder] = deadline
        return True

    async def admit(
        self,
        partition: str,
        checks: Sequence[RateCheck],
        slots: Sequence[Slot],
        holder: str,
        *,
        lease_s: float,
    ) -> Admission:
        # Neither call awaits anything: no other task runs between them.
        decision = await self._limiter.hit(partition, checks)
        if not decision.allowed:
            return Admission(decision=decision, acquired=False)
        acquired = await self.acquire(partition, slots, holder, lease_s=lease_s)
        return Admission(decision=decision, acquired=acquired)

    async def renew(self, leases: Sequence[Lease], *, lease_s: float) -> None:
        now = self._clock_us()
        deadline = now + int(lease_s * 1_000_000)
        for lease in leases:
            for key in lease.keys:
                holders = self._live(lease.partition, key, now)
                if lease.holder in holders:
                    holders[lease.holder] = deadline

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None:
        for key in keys:
            holders = self._holders.get((partition, key))
            if holders is not None:
                holders.pop(holder, None)
                if not holders:
                    del self._holders[(partition, key)]

    async def held(self, partition: str, key: str) -> int:
        if (partition, key) not in self._holders:
            return 0
        return len(self._live(partition, key, self._clock_us()))
