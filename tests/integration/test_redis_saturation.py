"""More Redis calls at once than connections: they wait their turn instead of failing, one that
waits too long fails alone with ``redis_busy``, and neither is taken for Redis being down (the
breaker, which fails every call for a while, stays closed)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.redis.client import RedisStore, create_client
from application.errors import ServiceUnavailable
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis


async def store_with(connections: int, **options: float | int | None) -> RedisStore:
    require_redis()
    client = create_client(REDIS_URL, max_connections=connections, timeout_s=5.0)
    return RedisStore(client, prefix=new_prefix(), retry_after_s=30.0, **options)  # type: ignore[arg-type]


async def blocking_read(store: RedisStore, seconds: float) -> object:
    """A call that holds its connection for ``seconds`` (BLPOP on a list nobody fills)."""
    key = store.key("sat", "empty")
    return await store.run("blocking read", lambda: store.client.blpop([key], timeout=seconds))


async def connection_taken(store: RedisStore) -> None:
    """Until the client's one connection is checked out (polling a condition, not a delay)."""
    pool = store.client.connection_pool
    async with asyncio.timeout(5):
        while not pool._in_use_connections:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.001)


async def test_more_calls_than_connections_all_succeed_and_redis_is_not_taken_for_down() -> None:
    store = await store_with(2, max_calls=2)
    try:
        results = await asyncio.gather(*(blocking_read(store, 0.05) for _ in range(12)))
        assert results == [None] * 12
        assert store.failures == 0 and store.busy == 0
        await store.ping()
    finally:
        await store.close()
        await drop_prefix(REDIS_URL, store.prefix)


async def test_a_call_that_waits_too_long_for_a_connection_fails_alone_with_redis_busy() -> None:
    store = await store_with(1, max_calls=1, call_wait_s=0.05)
    try:
        holder = asyncio.create_task(blocking_read(store, 1.0))
        await asyncio.sleep(0)  # the holder takes the only connection first
        with pytest.raises(ServiceUnavailable) as refused:
            await blocking_read(store, 0.01)
        assert refused.value.code == "redis_busy"
        assert refused.value.retry_after_s is not None
        assert "redis connections" in refused.value.message
        assert await holder is None
        # Redis was never down: the next call goes through at once.
        await store.ping()
        assert store.failures == 0 and store.busy == 1
    finally:
        await store.close()
        await drop_prefix(REDIS_URL, store.prefix)


async def test_a_client_out_of_connections_is_not_taken_for_redis_being_down() -> None:
    # No bound in the store: the client's own pool runs out and says so.
    store = await store_with(1, max_calls=None)
    try:
        holder = asyncio.create_task(blocking_read(store, 0.5))
        await connection_taken(store)
        with pytest.raises(ServiceUnavailable) as refused:
            await blocking_read(store, 0.01)
        assert refused.value.code == "redis_busy"
        await holder
        await store.ping()  # would fail at once for 30 s had the breaker opened
        assert store.failures == 0
    finally:
        await store.close()
        await drop_prefix(REDIS_URL, store.prefix)
