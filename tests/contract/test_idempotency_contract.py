"""IdempotencyStore contract on memory and Redis: one claim wins, outcomes replay, other
requests under the key are refused, held keys expire, and any sequence of operations matches a
reference model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adapters.memory.idempotency import MemoryIdempotencyStore
from adapters.redis.idempotency import RedisIdempotencyStore
from application.ports import ClaimOutcome, IdempotencyStore, StoredResponse
from tests.redis_support import redis_store

KINDS = ["memory", "redis"]
OK = StoredResponse(status=201, headers=(("content-type", "application/json"),), body=b'{"a":1}')


@contextlib.asynccontextmanager
async def open_store(kind: str) -> AsyncIterator[IdempotencyStore]:
    if kind == "memory":
        yield MemoryIdempotencyStore()
        return
    async with redis_store() as store:
        yield RedisIdempotencyStore(store)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_completed_request_replays_its_stored_response(kind) -> None:
    async with open_store(kind) as store:
        assert (await store.claim("p1", "k", "fp", lock_s=60)).outcome is ClaimOutcome.STARTED
        await store.complete("p1", "k", "fp", OK, retention_s=60)
        again = await store.claim("p1", "k", "fp", lock_s=60)
        assert again.outcome is ClaimOutcome.REPLAY
        assert again.response == OK


@pytest.mark.parametrize("kind", KINDS)
async def test_a_different_request_under_a_used_key_is_a_mismatch(kind) -> None:
    async with open_store(kind) as store:
        await store.claim("p1", "k", "fp", lock_s=60)
        assert (await store.claim("p1", "k", "other", lock_s=60)).outcome is ClaimOutcome.MISMATCH
        await store.complete("p1", "k", "fp", OK, retention_s=60)
        assert (await store.claim("p1", "k", "other", lock_s=60)).outcome is ClaimOutcome.MISMATCH


@pytest.mark.parametrize("kind", KINDS)
async def test_of_concurrent_claims_exactly_one_starts_the_rest_see_it_in_flight(kind) -> None:
    async with open_store(kind) as store:
        claims = await asyncio.gather(*(store.claim("p1", "k", "fp", lock_s=60) for _ in range(20)))
        outcomes = [c.outcome for c in claims]
        assert outcomes.count(ClaimOutcome.STARTED) == 1
        assert outcomes.count(ClaimOutcome.IN_FLIGHT) == 19


@pytest.mark.parametrize("kind", KINDS)
async def test_a_released_key_can_be_claimed_again_and_only_its_holder_releases(kind) -> None:
    async with open_store(kind) as store:
        await store.claim("p1", "k", "fp", lock_s=60)
        await store.release("p1", "k", "other")  # not the holder: nothing happens
        assert (await store.claim("p1", "k", "fp", lock_s=60)).outcome is ClaimOutcome.IN_FLIGHT
        await store.release("p1", "k", "fp")
        assert (await store.claim("p1", "k", "fp2", lock_s=60)).outcome is ClaimOutcome.STARTED


@pytest.mark.parametrize("kind", KINDS)
async def test_keys_belong_to_their_scope(kind) -> None:
    async with open_store(kind) as store:
        await store.claim("p1", "k", "fp", lock_s=60)
        await store.complete("p1", "k", "fp", OK, retention_s=60)
        assert (await store.claim("p2", "k", "fp", lock_s=60)).outcome is ClaimOutcome.STARTED


async def test_a_memory_claim_whose_holder_died_expires_after_the_lock() -> None:
    now = [0.0]
    store = MemoryIdempotencyStore(clock=lambda: now[0])
    await store.claim("p", "k", "fp", lock_s=60)
    now[0] = 59.9
    assert (await store.claim("p", "k", "fp", lock_s=60)).outcome is ClaimOutcome.IN_FLIGHT
    now[0] = 60.1
    assert (await store.claim("p", "k", "fp", lock_s=60)).outcome is ClaimOutcome.STARTED
    await store.complete("p", "k", "fp", OK, retention_s=100)
    now[0] = 160.0
    assert (await store.claim("p", "k", "x", lock_s=60)).outcome is ClaimOutcome.MISMATCH
    now[0] = 160.2
    assert (await store.claim("p", "k", "x", lock_s=60)).outcome is ClaimOutcome.STARTED


async def test_redis_holds_a_claim_for_the_lock_and_an_outcome_for_the_retention() -> None:
    async with redis_store() as redis:
        store = RedisIdempotencyStore(redis)
        key = redis.key("i:p", "k")
        await store.claim("p", "k", "fp", lock_s=30)
        assert 0 < await redis.client.pttl(key) <= 30_000
        await store.complete("p", "k", "fp", OK, retention_s=86_400)
        assert 30_000 < await redis.client.pttl(key) <= 86_400_000


ops = st.lists(
    st.tuples(
        st.sampled_from(["claim", "complete", "release"]),
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(["fa", "fb"]),
    ),
    max_size=30,
)


@pytest.mark.parametrize("kind", KINDS)
def test_any_sequence_matches_the_reference_state_machine(kind) -> None:
    @settings(max_examples=50, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(ops)
    def run(sequence) -> None:
        async def scenario() -> None:
            model: dict[str, tuple[str, bool]] = {}  # key -> (fingerprint, completed?)
            async with open_store(kind) as store:
                for op, key, fp in sequence:
                    held = model.get(key)
                    if op == "claim":
                        got = await store.claim("p", key, fp, lock_s=600)
                        if held is None:
                            expected = ClaimOutcome.STARTED
                            model[key] = (fp, False)
                        elif held[0] != fp:
                            expected = ClaimOutcome.MISMATCH
                        else:
                            expected = ClaimOutcome.REPLAY if held[1] else ClaimOutcome.IN_FLIGHT
                        assert got.outcome is expected
                        assert (got.response == OK) == (expected is ClaimOutcome.REPLAY)
                    elif op == "complete":
                        await store.complete("p", key, fp, OK, retention_s=600)
                        if held == (fp, False):
                            model[key] = (fp, True)
                    else:
                        await store.release("p", key, fp)
                        if held == (fp, False):
                            del model[key]

        asyncio.run(scenario())

    run()
