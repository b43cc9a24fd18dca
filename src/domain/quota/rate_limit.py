"""The generic cell rate algorithm (GCRA): a sliding window with a burst allowance in one number
of state per key, the theoretical arrival time (TAT).

A rule admits ``limit`` requests per ``window_s`` on average; up to ``burst`` may arrive at
once. A refused request leaves the state untouched, and a weighted request (``cost`` > 1) is
checked whole, so it can never overshoot the allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from domain.errors import InvariantViolated


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
        return cls(limit=limit, window_s=window_s, burst=max(1, math.ceil(limit * burst_ratio)))

    @property
    def interval_s(self) -> float:
        """Time one request's worth of allowance takes to come back."""
        return self.window_s / self.limit

    @property
    def tolerance_s(self) -> float:
        return self.interval_s * self.burst


@dataclass(frozen=True, slots=True, kw_only=True)
class RateOutcome:
    allowed: bool
    tat: float
    remaining: int
    reset_s: float
    retry_after_s: float


def decide(rule: RateLimitRule, tat: float, now: float, cost: int = 1) -> RateOutcome:
    """Decide one request of ``cost`` units at time ``now`` against state ``tat``."""
    if cost < 1:
        raise InvariantViolated("a request costs at least one unit")
    base = max(tat, now)
    new_tat = base + cost * rule.interval_s
    # Allowed when the new arrival time stays within the burst tolerance ahead of now. The
    # epsilon absorbs float error so that exactly ``burst`` back-to-back requests fit.
    excess = new_tat - now - rule.tolerance_s
    if excess > 1e-9:
        used = base - now
        remaining = max(0, int((rule.tolerance_s - used) / rule.interval_s + 1e-9))
        return RateOutcome(
            allowed=False,
            tat=tat,
            remaining=remaining,
            reset_s=max(0.0, base - now),
            retry_after_s=excess,
        )
    remaining = max(0, int((rule.tolerance_s - (new_tat - now)) / rule.interval_s + 1e-9))
    return RateOutcome(
        allowed=True, tat=new_tat, remaining=remaining, reset_s=new_tat - now, retry_after_s=0.0
    )
