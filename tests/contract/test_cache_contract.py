"""Cache contract on memory and Redis: scoped entries with a time to live, tag invalidation
across every reader of the store, hit and miss counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adapters.memory.cache import MemoryCache
from adapters.redis.cache import RedisCache
from application.ports import Cache
from tests.redis_support import redis_store

KINDS = ["memory", "redis"]


@contextlib.asynccontextmanager
async def open_cache(kind: str) -> AsyncIterator[Cache]:
    if kind == "memory":
        yield MemoryCache()
        return
    async with redis_store() as store:
        yield RedisCache(store)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stored_value_is_read_back_and_counted_as_a_hit(kind) -> None:
    async with open_cache(kind) as cache:
        assert await cache.get("t1", "k") is None
        await cache.set("t1", "k", b"\x00value\xff", ttl_s=60)
        assert await cache.get("t1", "k") == b"\x00value\xff"
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)
        assert cache.stats.hit_ratio == 0.5


@pytest.mark.parametrize("kind", KINDS)
async def test_scopes_never_see_each_others_entries(kind) -> None:
    async with open_cache(kind) as cache:
        await cache.set("t1", "k", b"one", ttl_s=60, tags=["kb"])
        await cache.set("t2", "k", b"two", ttl_s=60, tags=["kb"])
        assert await cache.get("t1", "k") == b"one"
        assert await cache.invalidate("t1", ["kb"]) == 1
        assert await cache.get("t1", "k") is None
        assert await cache.get("t2", "k") == b"two"


@pytest.mark.parametrize("kind", KINDS)
async def test_invalidating_a_tag_drops_exactly_the_entries_carrying_it(kind) -> None:
    async with open_cache(kind) as cache:
        await cache.set("t", "a", b"a", ttl_s=60, tags=["kb", "doc:1"])
        await cache.set("t", "b", b"b", ttl_s=60, tags=["doc:2"])
        await cache.set("t", "c", b"c", ttl_s=60)
        assert await cache.invalidate("t", ["doc:1", "doc:9"]) == 1
        assert [await cache.get("t", k) for k in "abc"] == [None, b"b", b"c"]
        assert await cache.invalidate("t", ["kb"]) == 0
        assert await cache.invalidate("t", []) == 0


async def test_two_redis_readers_of_one_store_see_one_invalidation() -> None:
    async with redis_store() as store:
        writer, reader = RedisCache(store), RedisCache(store)
        await writer.set("t", "k", b"v", ttl_s=60, tags=["kb"])
        assert await reader.get("t", "k") == b"v"
        await writer.invalidate("t", ["kb"])
        assert await reader.get("t", "k") is None


async def test_a_redis_entry_expires_by_its_time_to_live() -> None:
    async with redis_store() as store:
        cache = RedisCache(store)
        await cache.set("t", "k", b"v", ttl_s=2.5, tags=["kb"])
        # The tag is read first: expiring no earlier than the entry, its remaining time read
        # earlier is at least the entry's read later (read the other way round, a millisecond
        # passing between the reads would look like a tag expiring first).
        tag_ttl = await store.client.pttl(store.key("c:t", "tag", "kb"))
        ttl = await store.client.pttl(store.key("c:t", "e", "k"))
        assert 0 < ttl <= 2500
        assert tag_ttl >= ttl


async def test_a_memory_entry_past_its_time_to_live_is_a_miss(monkeypatch) -> None:
    import adapters.memory.cache as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    cache = MemoryCache(max_entries=2)
    await cache.set("t", "k", b"v", ttl_s=10)
    now[0] += 9.99
    assert await cache.get("t", "k") == b"v"
    now[0] += 0.02
    assert await cache.get("t", "k") is None


async def test_the_memory_cache_keeps_its_bound_dropping_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("t", "a", b"a", ttl_s=60, tags=["x"])
    await cache.set("t", "b", b"b", ttl_s=60)
    await cache.get("t", "a")
    await cache.set("t", "c", b"c", ttl_s=60)
    assert [await cache.get("t", k) for k in "abc"] == [b"a", None, b"c"]
    assert len(cache) == 2


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "invalidate"]),
        st.sampled_from(["s1", "s2"]),
        st.integers(0, 5),
        st.binary(max_size=8),
    ),
    max_size=40,
)


def tags_of(key: int) -> list[str]:
    return [f"tag{key % 3}", "all"] if key % 2 else [f"tag{key % 3}"]


@pytest.mark.parametrize("kind", KINDS)
def test_any_sequence_of_operations_matches_a_dictionary_model(kind) -> None:
    @settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(ops)
    def run(sequence) -> None:
        async def scenario() -> None:
            model: dict[tuple[str, int], bytes] = {}
            async with open_cache(kind) as cache:
                for op, scope, n, value in sequence:
                    if op == "set":
                        await cache.set(scope, f"k{n}", value, ttl_s=600, tags=tags_of(n))
                        model[(scope, n)] = value
                    elif op == "get":
                        assert await cache.get(scope, f"k{n}") == model.get((scope, n))
                    else:
                        tag = f"tag{n % 3}"
                        gone = [k for k in model if k[0] == scope and tag in tags_of(k[1])]
                        assert await cache.invalidate(scope, [tag]) == len(gone)
                        for k in gone:
                            del model[k]

        asyncio.run(scenario())

    run()
