"""RunLeases contract, in memory and on Redis: a lease held and renewed is never claimed; a
lapsed one is claimed by exactly one caller, held for it, and claimed again if that caller dies
too; released leases are gone. ``lapse`` moves every deadline into the past, as the passage of a
term without renewal would (in memory through the adapter's clock, on Redis by rewriting the
deadlines the way time would pass them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from adapters.memory.leases import MemoryRunLeases
from adapters.redis.leases import RedisRunLeases
from application.conversation.ports import RunLeases
from domain.ids import RunId, TenantId
from tests.redis_support import redis_store

A, B = TenantId("ten_a"), TenantId("ten_b")
R1, R2 = RunId("run-1"), RunId("run-2")


@dataclass
class Pair:
    """The instance executing runs and another instance of the same deployment."""

    owner: RunLeases
    other: RunLeases
    lapse: Callable[[], Awaitable[None]]
    renew: Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def open_pair(kind: str) -> AsyncIterator[Pair]:
    if kind == "memory":
        now = [0.0]
        leases = MemoryRunLeases(term_s=10, clock=lambda: now[0])

        async def lapse() -> None:
            now[0] += 11

        async def renew() -> None:
            leases.renew()

        yield Pair(leases, leases, lapse, renew)
        return
    async with redis_store() as store:
        owner, other = RedisRunLeases(store, term_s=10), RedisRunLeases(store, term_s=10)
        key = store.key("leases", "runs")

        async def lapse() -> None:
            members = await store.client.zrange(key, 0, -1)
            if members:
                await store.client.zadd(key, dict.fromkeys(members, 0))

        yield Pair(owner, other, lapse, owner.renew)


@pytest.fixture(params=["memory", "redis"])
async def pair(request) -> AsyncIterator[Pair]:
    async with open_pair(request.param) as p:
        yield p


async def test_a_held_lease_that_is_renewed_is_never_claimed(pair: Pair) -> None:
    assert await pair.owner.hold(A, R1) is True
    assert await pair.other.claim_lapsed(limit=10) == []
    await pair.renew()
    assert await pair.other.claim_lapsed(limit=10) == []


async def test_holding_a_held_run_again_is_refused(pair: Pair) -> None:
    assert await pair.owner.hold(A, R1) is True
    assert await pair.owner.hold(A, R1) is False
    assert await pair.other.hold(A, R1) is False
    assert await pair.owner.hold(B, R1) is True  # the same id in another tenant is another run


async def test_a_lapsed_lease_is_claimed_by_exactly_one_caller(pair: Pair) -> None:
    await pair.owner.hold(A, R1)
    await pair.owner.hold(B, R1)
    await pair.lapse()
    claims = await asyncio.gather(*(pair.other.claim_lapsed(limit=10) for _ in range(6)))
    claimed = [run for claim in claims for run in claim]
    assert sorted(claimed) == [(A, R1), (B, R1)]


async def test_a_claimer_that_dies_too_leaves_the_run_to_the_next(pair: Pair) -> None:
    await pair.owner.hold(A, R1)
    await pair.lapse()
    assert await pair.other.claim_lapsed(limit=10) == [(A, R1)]
    assert await pair.other.claim_lapsed(limit=10) == []  # held for its claimer
    await pair.lapse()  # the claimer never released it
    assert await pair.other.claim_lapsed(limit=10) == [(A, R1)]


async def test_released_leases_are_never_claimed(pair: Pair) -> None:
    await pair.owner.hold(A, R1)
    await pair.owner.hold(A, R2)
    await pair.owner.release(A, R1)
    await pair.renew()  # a release may wait for the next renewal
    await pair.lapse()
    assert await pair.other.claim_lapsed(limit=10) == [(A, R2)]
    await pair.other.release(A, R2)
    await pair.lapse()
    assert await pair.other.claim_lapsed(limit=10) == []


async def test_claims_take_at_most_the_limit(pair: Pair) -> None:
    for i in range(5):
        await pair.owner.hold(A, RunId(f"r{i}"))
    await pair.lapse()
    first = await pair.other.claim_lapsed(limit=3)
    rest = await pair.other.claim_lapsed(limit=3)
    assert len(first) == 3 and len(rest) == 2
    assert {r for _, r in first + rest} == {RunId(f"r{i}") for i in range(5)}


async def test_a_renewal_brings_back_leases_a_restarted_redis_lost() -> None:
    async with open_pair("redis") as p:
        assert isinstance(p.owner, RedisRunLeases)
        await p.owner.hold(A, R1)
        store = p.owner._store
        await store.client.delete(store.key("leases", "runs"))  # as a restart empties Redis
        await p.renew()
        await p.lapse()
        assert await p.other.claim_lapsed(limit=10) == [(A, R1)]
