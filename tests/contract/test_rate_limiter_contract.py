"""RateLimiter and ConcurrencyGuard contract: the in-memory and Redis adapters make exactly the
decisions of the domain's GCRA reference model, on a virtual clock, for any traffic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adapters.memory.rate_limiter import MemoryConcurrencyGuard, MemoryRateLimiter
from adapters.redis.rate_limiter import RedisConcurrencyGuard, RedisRateLimiter
from application.quota.ports import Lease, RateCheck, Slot, decision_of
from domain.quota.rate_limit import RateLimitRule, decide_all
from tests.redis_support import redis_store

KINDS = ["memory", "redis"]


class VirtualClock:
    def __init__(self) -> None:
        self.now_us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now_us


@contextlib.asynccontextmanager
async def limiter(kind: str, clock: Callable[[], int]) -> AsyncIterator[object]:
    if kind == "memory":
        yield MemoryRateLimiter(clock_us=clock)
        return
    async with redis_store() as store:
        yield RedisRateLimiter(store, clock_us=clock)


@contextlib.asynccontextmanager
async def guard(kind: str, clock: Callable[[], int]) -> AsyncIterator[object]:
    if kind == "memory":
        yield MemoryConcurrencyGuard(clock_us=clock)
        return
    async with redis_store() as store:
        yield RedisConcurrencyGuard(store, clock_us=clock)


RULE = RateLimitRule.sliding(limit=8, window_s=60, burst_ratio=0.25)  # burst 2


def check(key: str = "runs", rule: RateLimitRule = RULE, policy: str = "tenant") -> RateCheck:
    return RateCheck(policy=policy, key=key, rule=rule)


def lease(partition: str, holder: str, *keys: str) -> Lease:
    return Lease(partition=partition, keys=keys or ("runs",), holder=holder)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fresh_key_gets_its_burst_then_refusals_with_retry_after(kind) -> None:
    clock = VirtualClock()
    async with limiter(kind, clock) as lim:
        decisions = [await lim.hit("t:a", [check()]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert decisions[2].retry_after_s == pytest.approx(7.5)
    assert decisions[0].binding.limit == 8
    assert [d.binding.remaining for d in decisions] == [1, 0, 0, 0]


@pytest.mark.parametrize("kind", KINDS)
async def test_partitions_and_keys_are_independent(kind) -> None:
    clock = VirtualClock()
    async with limiter(kind, clock) as lim:
        for _ in range(2):
            assert (await lim.hit("t:a", [check()])).allowed
        assert not (await lim.hit("t:a", [check()])).allowed
        assert (await lim.hit("t:b", [check()])).allowed
        assert (await lim.hit("t:a", [check("read")])).allowed


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_refused_by_one_counter_is_counted_by_none(kind) -> None:
    clock = VirtualClock()
    tight = RateLimitRule(limit=60, window_s=60, burst=1)
    loose = RateLimitRule(limit=600, window_s=60, burst=100)
    async with limiter(kind, clock) as lim:
        both = [check("runs", loose), check("runs:p:k1", tight, "key")]
        assert (await lim.hit("t:a", both)).allowed
        refused = await lim.hit("t:a", both)
        assert not refused.allowed
        assert refused.binding.policy == "key"
        # The tenant counter did not count the refused request: 99 left, as after one.
        alone = await lim.hit("t:a", [check("runs", loose)])
        assert alone.binding.remaining == 98


@pytest.mark.parametrize("kind", KINDS)
async def test_a_heavier_request_than_the_burst_is_refused_and_not_counted(kind) -> None:
    clock = VirtualClock()
    rule = RateLimitRule(limit=8, window_s=60, burst=2)
    async with limiter(kind, clock) as lim:
        assert not (await lim.hit("t:k", [check(rule=rule)], cost=3)).allowed
        assert (await lim.hit("t:k", [check(rule=rule)], cost=2)).allowed


@pytest.mark.parametrize("kind", KINDS)
async def test_waiting_the_retry_after_is_enough(kind) -> None:
    clock = VirtualClock()
    async with limiter(kind, clock) as lim:
        for _ in range(2):
            await lim.hit("t:a", [check()])
        refused = await lim.hit("t:a", [check()])
        clock.now_us += round(refused.retry_after_s * 1_000_000)
        assert (await lim.hit("t:a", [check()])).allowed


rules = st.builds(
    lambda limit, window, burst: RateLimitRule(limit=limit, window_s=window, burst=burst),
    st.integers(1, 1_000),
    st.sampled_from([1, 10, 60, 3600]),
    st.integers(1, 50),
)
# Each request: microseconds since the previous one, partition, which counters, cost.
traffic = st.lists(
    st.tuples(
        st.integers(0, 5_000_000),
        st.sampled_from(["t:1", "t:2"]),
        st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True),
        st.integers(1, 4),
    ),
    max_size=40,
)


@pytest.mark.parametrize("kind", KINDS)
def test_every_adapter_decides_exactly_as_the_reference_model(kind) -> None:
    @settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(st.lists(rules, min_size=3, max_size=3), traffic)
    def run(rule_set, requests) -> None:
        async def scenario() -> None:
            clock = VirtualClock()
            model: dict[tuple[str, str], int] = {}
            async with limiter(kind, clock) as lim:
                for gap, partition, which, cost in requests:
                    clock.now_us += gap
                    checks = [check(f"c{i}", rule_set[i], f"p{i}") for i in which]
                    keys = [(partition, c.key) for c in checks]
                    allowed, outcomes = decide_all(
                        [(c.rule, model.get(k, 0)) for c, k in zip(checks, keys, strict=True)],
                        clock.now_us,
                        cost,
                    )
                    if allowed:
                        for k, o in zip(keys, outcomes, strict=True):
                            model[k] = o.tat_us
                    expected = decision_of(checks, allowed, outcomes)
                    assert await lim.hit(partition, checks, cost=cost) == expected

        asyncio.run(scenario())

    run()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cap_admits_that_many_holders_and_release_frees_a_place(kind) -> None:
    clock = VirtualClock()
    slots = [Slot(key="runs", cap=2)]
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", slots, "r1", lease_s=30)
        assert await g.acquire("t:a", slots, "r2", lease_s=30)
        assert not await g.acquire("t:a", slots, "r3", lease_s=30)
        assert await g.acquire("t:b", slots, "r3", lease_s=30)  # another tenant
        assert await g.held("t:a", "runs") == 2
        await g.release("t:a", ["runs"], "r1")
        assert await g.acquire("t:a", slots, "r3", lease_s=30)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_holder_takes_places_under_every_slot_or_none(kind) -> None:
    clock = VirtualClock()
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", [Slot(key="runs:p:k1", cap=1)], "r1", lease_s=30)
        both = [Slot(key="runs", cap=5), Slot(key="runs:p:k1", cap=1)]
        assert not await g.acquire("t:a", both, "r2", lease_s=30)
        assert await g.held("t:a", "runs") == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreleased_holder_frees_its_place_when_its_lease_runs_out(kind) -> None:
    clock = VirtualClock()
    slots = [Slot(key="runs", cap=1)]
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", slots, "crashed", lease_s=30)
        clock.now_us += 29_000_000
        assert not await g.acquire("t:a", slots, "r2", lease_s=30)
        clock.now_us += 1_000_001
        assert await g.acquire("t:a", slots, "r2", lease_s=30)


@pytest.mark.parametrize("kind", KINDS)
async def test_renewing_keeps_a_live_holder_past_its_first_lease(kind) -> None:
    clock = VirtualClock()
    slots = [Slot(key="runs", cap=1)]
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", slots, "r1", lease_s=30)
        clock.now_us += 20_000_000
        await g.renew([lease("t:a", "r1")], lease_s=30)
        clock.now_us += 20_000_000
        assert not await g.acquire("t:a", slots, "r2", lease_s=30)
        # Renewing a holder that already lost its place does not bring it back.
        clock.now_us += 31_000_000
        await g.renew([lease("t:a", "r1")], lease_s=30)
        assert await g.held("t:a", "runs") == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_every_lease_that_ran_out_frees_its_place_however_they_were_staggered(kind) -> None:
    clock = VirtualClock()
    slots = [Slot(key="runs", cap=2)]
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", slots, "a", lease_s=30)
        clock.now_us += 10_000_000
        assert await g.acquire("t:a", slots, "b", lease_s=30)
        clock.now_us += 25_000_000  # a's lease has run out, b's has not
        assert await g.acquire("t:a", slots, "c", lease_s=30)
        clock.now_us += 10_000_000  # now b's has too
        assert await g.held("t:a", "runs") == 1
        assert await g.acquire("t:a", slots, "d", lease_s=30)
        assert not await g.acquire("t:a", slots, "e", lease_s=30)


@pytest.mark.parametrize("kind", KINDS)
def test_holders_never_exceed_the_cap_under_any_sequence(kind) -> None:
    ops = st.lists(
        st.tuples(
            st.sampled_from(["acquire", "release", "renew", "wait"]),
            st.integers(0, 5),
            st.integers(0, 20_000_000),
        ),
        max_size=40,
    )

    @settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(ops, st.integers(1, 3))
    def run(sequence, cap) -> None:
        async def scenario() -> None:
            clock = VirtualClock()
            model: dict[str, int] = {}  # holder -> lease deadline
            async with guard(kind, clock) as g:
                for op, n, dt in sequence:
                    holder = f"r{n}"
                    live = {h: d for h, d in model.items() if d > clock.now_us}
                    if op == "acquire":
                        expect = holder in live or len(live) < cap
                        got = await g.acquire(
                            "t:a", [Slot(key="runs", cap=cap)], holder, lease_s=30
                        )
                        assert got == expect
                        if got:
                            live[holder] = clock.now_us + 30_000_000
                    elif op == "release":
                        await g.release("t:a", ["runs"], holder)
                        live.pop(holder, None)
                    elif op == "renew":
                        await g.renew([lease("t:a", holder)], lease_s=30)
                        if holder in live:
                            live[holder] = clock.now_us + 30_000_000
                    else:
                        clock.now_us += dt
                    model = live
                    assert await g.held("t:a", "runs") == len(
                        [d for d in model.values() if d > clock.now_us]
                    )
                    assert len(model) <= cap

        asyncio.run(scenario())

    run()


@contextlib.asynccontextmanager
async def limits(kind: str, clock: Callable[[], int]) -> AsyncIterator[tuple[object, object]]:
    """A rate limiter and a concurrency guard on the same counters."""
    if kind == "memory":
        lim = MemoryRateLimiter(clock_us=clock)
        yield lim, MemoryConcurrencyGuard(clock_us=clock, limiter=lim)
        return
    async with redis_store() as store:
        yield RedisRateLimiter(store, clock_us=clock), RedisConcurrencyGuard(store, clock_us=clock)


@pytest.mark.parametrize("kind", KINDS)
async def test_renewing_holders_of_several_partitions_in_one_call_keeps_each_in_place(
    kind,
) -> None:
    clock = VirtualClock()
    tenant_and_key = [Slot(key="runs", cap=2), Slot(key="runs:p:k1", cap=1)]
    async with guard(kind, clock) as g:
        assert await g.acquire("t:a", tenant_and_key, "a1", lease_s=30)
        assert await g.acquire("t:a", [Slot(key="runs", cap=2)], "a2", lease_s=30)
        assert await g.acquire("t:b", [Slot(key="runs", cap=1)], "b1", lease_s=30)
        clock.now_us += 20_000_000
        await g.renew(
            [
                lease("t:a", "a1", "runs", "runs:p:k1"),
                lease("t:a", "a2"),
                lease("t:b", "b1"),
            ],
            lease_s=30,
        )
        clock.now_us += 20_000_000  # 40 s after acquiring, 20 s after renewing
        assert await g.held("t:a", "runs") == 2
        assert await g.held("t:a", "runs:p:k1") == 1
        assert await g.held("t:b", "runs") == 1
        assert not await g.acquire("t:b", [Slot(key="runs", cap=1)], "b2", lease_s=30)


@pytest.mark.parametrize("kind", KINDS)
async def test_renewing_nothing_is_a_no_op(kind) -> None:
    async with guard(kind, VirtualClock()) as g:
        await g.renew([], lease_s=30)
        assert await g.held("t:a", "runs") == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_refused_by_a_rate_counter_takes_no_place_and_is_not_counted(kind) -> None:
    clock = VirtualClock()
    tight = RateLimitRule(limit=60, window_s=60, burst=1)
    loose = RateLimitRule(limit=600, window_s=60, burst=100)
    slots = [Slot(key="runs", cap=5)]
    async with limits(kind, clock) as (lim, g):
        both = [check("runs", loose), check("runs:p:k1", tight, "key")]
        first = await g.admit("t:a", both, slots, "r1", lease_s=30)
        assert first.decision.allowed and first.acquired
        refused = await g.admit("t:a", both, slots, "r2", lease_s=30)
        assert not refused.decision.allowed and not refused.acquired
        assert refused.decision.binding.policy == "key"
        assert await g.held("t:a", "runs") == 1
        # Neither counter counted the refused run: the tenant's has 98 left after one more.
        assert (await lim.hit("t:a", [check("runs", loose)])).binding.remaining == 98


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_refused_by_a_cap_is_counted_by_the_rate_counters(kind) -> None:
    clock = VirtualClock()
    slots = [Slot(key="runs", cap=1)]
    rule = RateLimitRule(limit=600, window_s=60, burst=100)
    async with limits(kind, clock) as (lim, g):
        assert (await g.admit("t:a", [check(rule=rule)], slots, "r1", lease_s=30)).acquired
        capped = await g.admit("t:a", [check(rule=rule)], slots, "r2", lease_s=30)
        assert capped.decision.allowed and not capped.acquired
        assert capped.decision.binding.remaining == 98
        assert await g.held("t:a", "runs") == 1
        # The limiter reads the counters the guard moved.
        assert (await lim.hit("t:a", [check(rule=rule)])).binding.remaining == 97


@pytest.mark.parametrize("kind", KINDS)
def test_admitting_runs_decides_exactly_as_the_rate_and_cap_models(kind) -> None:
    """Any mix of admissions, releases and waits: each admission's rate decision is the GCRA
    reference model's, it takes a place exactly when the model has room, and the live holders
    never exceed the cap."""
    ops = st.lists(
        st.tuples(
            st.sampled_from(["admit", "admit", "release", "wait"]),
            st.integers(0, 4),
            st.integers(0, 20_000_000),
        ),
        max_size=40,
    )

    @settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(ops, st.integers(1, 3), rules)
    def run(sequence, cap, rule) -> None:
        async def scenario() -> None:
            clock = VirtualClock()
            tat = 0
            holders: dict[str, int] = {}  # holder -> lease deadline
            slots = [Slot(key="runs", cap=cap)]
            async with limits(kind, clock) as (_, g):
                for op, n, dt in sequence:
                    holder = f"r{n}"
                    holders = {h: d for h, d in holders.items() if d > clock.now_us}
                    if op == "admit":
                        allowed, outcomes = decide_all([(rule, tat)], clock.now_us, 1)
                        room = holder in holders or len(holders) < cap
                        got = await g.admit("t:a", [check(rule=rule)], slots, holder, lease_s=30)
                        assert got.decision == decision_of([check(rule=rule)], allowed, outcomes)
                        assert got.acquired == (allowed and room)
                        if allowed:
                            tat = outcomes[0].tat_us
                        if got.acquired:
                            holders[holder] = clock.now_us + 30_000_000
                    elif op == "release":
                        await g.release("t:a", ["runs"], holder)
                        holders.pop(holder, None)
                    else:
                        clock.now_us += dt
                    assert len(holders) <= cap
                    live = len([d for d in holders.values() if d > clock.now_us])
                    assert await g.held("t:a", "runs") == live

        asyncio.run(scenario())

    run()


async def test_a_counter_on_a_given_clock_does_not_expire_on_redis_real_time() -> None:
    # On the server's clock a counter expires when its TAT has passed; on a clock the caller
    # gives, Redis's own time says nothing about that, so a slow moment between two decisions
    # (a busy machine) must not lose the counter.
    clock = VirtualClock()
    fast = RateLimitRule.sliding(limit=100, window_s=1, burst_ratio=0.5)
    async with redis_store() as store:
        lim = RedisRateLimiter(store, clock_us=clock)
        await lim.hit("p", [check(rule=fast)])
        ttl_ms = await store.client.pttl(store.key("p", "rl", "runs"))
    assert ttl_ms > 60_000 - 5_000
