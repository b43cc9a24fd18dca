"""The generic cell rate algorithm (GCRA): a sliding window with a burst allowance in one number
of state per key, the theoretical arrival time (TAT).

A rule admits ``limit`` requests per ``window_s`` on average; up to ``burst`` may arrive at
once. A refused request leaves the state untouched, and a weighted request (``cost`` > 1) is
checked whole, so it can never overshoot the allowance.

Time is integer microseconds: the same arithmetic runs in Redis's Lua (whose numbers are
doubles, exact for integers below 2**53 µs, some 285 years), so the two agree to the unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from domain.errors import InvariantViolated

US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitRule:
    limit: int
    window_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.burst < 1 or not self.window_s > 0:
            raise InvariantViolated("a rate limit needs limit ≥ 1, burst ≥ 1 and a window > 0")

    @classmethod
    def sliding(cls, *, limit: int, window_s: float, burst_ratio: float) -> RateLimitRule:
        # Rounded before the ceiling: 600 * 0.2 is 120.00000000000001 in floating point.
        return cls(
            limit=limit, window_s=window_s, burst=max(1, math.ceil(round(limit * burst_ratio, 9)))
        )

    @property
    def interval_us(self) -> int:
        """Time one request's worth of allowance takes to come back, rounded up so that the
        average never exceeds the limit; at least 1 µs (a million a second is no limit)."""
        window_us = round(self.window_s * US_PER_S)
        return max(1, -(-window_us // self.limit))

    @property
    def tolerance_us(self) -> int:
        return self.interval_us * self.burst


@dataclass(frozen=True, slots=True, kw_only=True)
class RateOutcome:
    allowed: bool
    tat_us: int
    remaining: int
    reset_us: int
    retry_after_us: int


def decide(rule: RateLimitRule, tat_us: int, now_us: int, cost: int = 1) -> RateOutcome:
    """Decide one request of ``cost`` units at time ``now_us`` against state ``tat_us``."""
    if cost < 1:
        raise InvariantViolated("a request costs at least one unit")
    interval, tolerance = rule.interval_us, rule.tolerance_us
    base = max(tat_us, now_us)
    new_tat = base + cost * interval
    if new_tat - now_us > tolerance:
        return RateOutcome(
            allowed=False,
            tat_us=tat_us,
            remaining=max(0, (tolerance - (base - now_us)) // interval),
            reset_us=base - now_us,
            retry_after_us=new_tat - now_us - tolerance,
        )
    return RateOutcome(
        allowed=True,
        tat_us=new_tat,
        remaining=(tolerance - (new_tat - now_us)) // interval,
        reset_us=new_tat - now_us,
        retry_after_us=0,
    )


def decide_all(
    checks: Sequence[tuple[RateLimitRule, int]], now_us: int, cost: int = 1
) -> tuple[bool, list[RateOutcome]]:
    """Decide one request against several counters at once (tenant, key, address): it is
    admitted only if every counter admits it, and then counted in all of them; refused, it is
    counted in none. The outcomes of a refusal carry each counter's unchanged state."""
    outcomes = [decide(rule, tat, now_us, cost) for rule, tat in checks]
    allowed = all(o.allowed for o in outcomes)
    if not allowed:
        outcomes = [
            o
            if not o.allowed
            else RateOutcome(
                allowed=True,
                tat_us=tat,
                remaining=(rule.tolerance_us - max(0, tat - now_us)) // rule.interval_us,
                reset_us=max(0, tat - now_us),
                retry_after_us=0,
            )
            for o, (rule, tat) in zip(outcomes, checks, strict=True)
        ]
    return allowed, outcomes
