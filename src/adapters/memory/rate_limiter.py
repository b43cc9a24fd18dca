"""In-process rate limiter over the domain's GCRA."""

from __future__ import annotations

import time

from application.conversation.ports import RateDecision
from domain.quota.rate_limit import RateLimitRule, decide


class MemoryRateLimiter:
    """Per-process state: two instances each enforce their own limit (Redis shares one)."""

    def __init__(self, *, burst_ratio: float = 0.2, max_keys: int = 100_000) -> None:
        self._tat: dict[str, float] = {}
        self._burst_ratio = burst_ratio
        self._max_keys = max_keys

    async def hit(self, key: str, *, limit: int, window_s: float, cost: int = 1) -> RateDecision:
        now = time.monotonic()
        rule = RateLimitRule.sliding(limit=limit, window_s=window_s, burst_ratio=self._burst_ratio)
        outcome = decide(rule, self._tat.get(key, 0.0), now, cost)
        if outcome.allowed:
            if len(self._tat) >= self._max_keys and key not in self._tat:
                self._evict(now)
            self._tat[key] = outcome.tat
        return RateDecision(
            allowed=outcome.allowed,
            limit=rule.limit,
            remaining=outcome.remaining,
            reset_s=outcome.reset_s,
            retry_after_s=outcome.retry_after_s,
        )

    def _evict(self, now: float) -> None:
        # Keys whose theoretical arrival time has passed carry no state worth keeping.
        for k in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[k]
