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


class _Holders:
    """One slot's holders and their lease deadlines. ``next_expiry`` is never later than the
    earliest deadline, so while the clock is before it no lease has run out and the count is
    exact without looking at every holder."""

    __slots__ = ("deadlines", "next_expiry")

    def __init__(self) -> None:
        self.deadlines: dict[str, int] = {}
        self.next_expiry = _NEVER

    def hold(self, holder: str, deadline: int) -> None:
        self.deadlines[holder] = deadline
        self.next_expiry = min(self.next_expiry, deadline)

    def live(self, now: int) -> dict[str, int]:
        if now >= self.next_expiry:
            deadlines = self.deadlines
            for h in [h for h, deadline in deadlines.items() if deadline <= now]:
                del deadlines[h]
            self.next_expiry = min(deadlines.values(), default=_NEVER)
        return self.deadlines


_NEVER = 2**63


class MemoryConcurrencyGuard:
    """Holders per slot with lease deadlines on the monotonic clock. Expired leases are dropped
    when a slot is counted, and only once one may have run out: acquiring, renewing and
    releasing cost the same with ten thousand holders as with ten. ``admit`` counts on
    ``limiter`` (give it the process's rate limiter, so that both share their counters)."""

    def __init__(
        self,
        *,
        clock_us: Callable[[], int] = monotonic_us,
        limiter: MemoryRateLimiter | None = None,
    ) -> None:
        self._slots: dict[tuple[str, str], _Holders] = {}
        self._clock_us = clock_us
        self._limiter = limiter if limiter is not None else MemoryRateLimiter(clock_us=clock_us)

    def _slot(self, partition: str, key: str) -> _Holders:
        slot = self._slots.get((partition, key))
        if slot is None:
            slot = self._slots[(partition, key)] = _Holders()
        return slot

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool:
        now = self._clock_us()
        held = [self._slot(partition, s.key) for s in slots]
        for h, s in zip(held, slots, strict=True):
            live = h.live(now)
            if len(live) >= s.cap and holder not in live:
                return False
        deadline = now + int(lease_s * 1_000_000)
        for h in held:
            h.hold(holder, deadline)
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
                slot = self._slots.get((lease.partition, key))
                if slot is None:
                    continue
                current = slot.deadlines.get(lease.holder)
                if current is None:
                    continue
                if current <= now:
                    # Its lease ran out: the place is gone, and not given back.
                    del slot.deadlines[lease.holder]
                else:
                    slot.hold(lease.holder, deadline)

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None:
        for key in keys:
            slot = self._slots.get((partition, key))
            if slot is not None:
                slot.deadlines.pop(holder, None)
                if not slot.deadlines:
                    del self._slots[(partition, key)]

    async def held(self, partition: str, key: str) -> int:
        slot = self._slots.get((partition, key))
        if slot is None:
            return 0
        return len(slot.live(self._clock_us()))
