"""RateLimiter contract: every adapter agrees with the domain's GCRA reference model (the Redis
adapter joins this suite with the Redis change)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.rate_limiter import MemoryRateLimiter

ADAPTERS = {"memory": lambda: MemoryRateLimiter(burst_ratio=0.25)}


async def test_a_fresh_key_gets_its_burst_then_refusals_with_retry_after() -> None:
    for make in ADAPTERS.values():
        limiter = make()
        decisions = [await limiter.hit("tenant:a", limit=8, window_s=60) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, False, False]
        assert decisions[2].retry_after_s > 0
        assert decisions[0].limit == 8


async def test_keys_are_independent() -> None:
    for make in ADAPTERS.values():
        limiter = make()
        for _ in range(2):
            assert (await limiter.hit("tenant:a", limit=8, window_s=60)).allowed
        assert not (await limiter.hit("tenant:a", limit=8, window_s=60)).allowed
        assert (await limiter.hit("tenant:b", limit=8, window_s=60)).allowed


async def test_a_heavier_request_than_the_burst_is_refused_and_not_counted() -> None:
    for make in ADAPTERS.values():
        limiter = make()
        assert not (await limiter.hit("k", limit=8, window_s=60, cost=3)).allowed
        assert (await limiter.hit("k", limit=8, window_s=60, cost=2)).allowed


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), max_size=30), st.integers(1, 20))
def test_admitted_units_within_one_instant_never_exceed_the_burst(costs, limit) -> None:
    async def scenario() -> None:
        for make in ADAPTERS.values():
            limiter = make()
            burst = max(1, -(-limit * 25 // 100))
            admitted = 0
            for cost in costs:
                # A window of a day: no allowance comes back during the test.
                d = await limiter.hit("k", limit=limit, window_s=86_400, cost=cost)
                admitted += cost if d.allowed else 0
            assert admitted <= burst

    asyncio.run(scenario())
