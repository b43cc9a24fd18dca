"""The shared, pipelined Redis connection against the machine's Redis (and, for faults, a
socket that never answers and a connection Redis itself closes)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.client import Lua, RedisStore, create_client
from adapters.redis.wire import Multiplexer
from application.errors import ServiceUnavailable
from tests.redis_support import REDIS_URL, drop_prefix, require_redis


@contextlib.asynccontextmanager
async def shared(url: str = REDIS_URL, **options: float) -> AsyncIterator[tuple[Multiplexer, str]]:
    require_redis(url)
    prefix = f"sbatest:{uuid.uuid4().hex[:12]}:"
    mux = Multiplexer(url, **options)
    try:
        yield mux, prefix
    finally:
        await mux.close()
        await drop_prefix(url, prefix)


async def test_concurrent_callers_each_get_the_replies_to_their_own_commands() -> None:
    async with shared() as (mux, prefix):

        async def caller(i: int) -> None:
            key = f"{prefix}{i}"
            # Pipelines of different lengths, so that a reply given to the wrong caller shows.
            replies = await mux.send([("SET", key, f"v{i}"), *[("GET", key)] * (i % 4)])
            assert replies == [b"OK", *[f"v{i}".encode()] * (i % 4)]
            assert await mux.send([("INCRBY", f"{key}:n", i)]) == [i]

        await asyncio.gather(*(caller(i) for i in range(500)))
        assert mux.connects == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(st.integers(min_value=1, max_value=5), st.booleans()), min_size=1, max_size=30
    )
)
def test_callers_that_give_up_do_not_shift_the_replies_of_the_others(plan) -> None:
    """Any mix of callers, some cancelled before their replies come: every caller that waits
    gets exactly its own replies."""

    async def scenario() -> None:
        async with shared() as (mux, prefix):
            waiting = []
            for i, (length, cancel) in enumerate(plan):
                key = f"{prefix}{i}"
                future = mux.send([("SET", key, i), *[("GET", key)] * (length - 1)])
                task = asyncio.ensure_future(future)
                if cancel:
                    task.cancel()
                waiting.append((i, length, cancel, task))
            for i, length, cancel, task in waiting:
                if cancel:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    assert await task == [b"OK", *[str(i).encode()] * (length - 1)]
            # And the connection is in step afterwards.
            assert await mux.send([("PING",)]) == [b"PONG"]

    asyncio.run(scenario())


async def test_a_call_with_no_commands_gets_no_replies_and_takes_none_of_the_next() -> None:
    async with shared() as (mux, _):
        empty, after = await asyncio.gather(mux.send([]), mux.send([("PING",)]))
        assert (empty, after) == ([], [b"PONG"])


async def test_an_error_reply_is_that_commands_reply_and_the_others_still_run() -> None:
    async with shared() as (mux, prefix):
        replies = await mux.send(
            [
                ("SET", f"{prefix}s", "text"),
                ("INCR", f"{prefix}s"),
                ("EVALSHA", "0" * 40, 0),
                ("GET", f"{prefix}s"),
            ]
        )
        assert replies[0] == b"OK"
        assert type(replies[1]) is ResponseError and "not an integer" in str(replies[1])
        assert isinstance(replies[2], NoScriptError)
        assert replies[3] == b"text"


async def test_the_store_loads_a_script_redis_does_not_hold_and_runs_it_once() -> None:
    require_redis()
    prefix = f"sbatest:{uuid.uuid4().hex[:12]}:"
    # A script of its own (its SHA1 is new to Redis): the first call misses, is loaded, runs.
    script = Lua(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
    store = RedisStore(create_client(REDIS_URL), mux=Multiplexer(REDIS_URL), prefix=prefix)
    try:
        key = store.key("t", "n")
        assert await store.eval("count", script, [key], ()) == 1
        assert await store.eval("count", script, [key], ()) == 2
    finally:
        await store.close()
        await drop_prefix(REDIS_URL, prefix)


async def test_the_database_of_the_url_is_the_one_written() -> None:
    require_redis()
    key = f"sbatest:{uuid.uuid4().hex[:12]}:db"
    base = REDIS_URL.rsplit("/", 1)[0]
    other = aioredis.Redis.from_url(f"{base}/7")
    mux = Multiplexer(f"{base}/7")
    try:
        await mux.send([("SET", key, "here")])
        assert await other.get(key) == b"here"
        assert await aioredis.Redis.from_url(f"{base}/0").get(key) is None
    finally:
        await other.delete(key)
        await other.aclose()
        await mux.close()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://127.0.0.1:6379/0", "redis:// or rediss://"),
        ("redis://127.0.0.1:6379/zero", "database number"),
    ],
)
def test_a_url_it_cannot_use_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Multiplexer(url)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and reads, but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_redis_that_does_not_answer_fails_every_waiting_caller_with_a_timeout() -> None:
    async with silent_server() as port:
        mux = Multiplexer(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        try:
            results = await asyncio.gather(
                *(mux.send([("GET", "k")]) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            store = RedisStore(create_client(f"redis://127.0.0.1:{port}/0"), mux=mux)
            with pytest.raises(ServiceUnavailable, match="unreachable"):
                await store.call("probe", [("GET", "k")])
            # The breaker is open: the next call fails at once, without waiting again.
            with pytest.raises(ServiceUnavailable, match="skipped"):
                await store.call("probe", [("GET", "k")])
        finally:
            await mux.close()


async def test_a_connection_redis_closes_is_replaced_by_the_next_call() -> None:
    async with shared() as (mux, prefix):
        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            (client_id,) = await mux.send([("CLIENT", "ID")])
            # A caller waiting on the connection when Redis drops it gets ConnectionError.
            waiting = asyncio.ensure_future(mux.send([("BLPOP", f"{prefix}never", 5)]))
            await asyncio.sleep(0)  # written
            assert await admin.client_kill_filter(_id=client_id) == 1
            with pytest.raises(RedisConnectionError):
                await waiting
        finally:
            await admin.aclose()
        assert await mux.send([("SET", f"{prefix}k", "v")]) == [b"OK"]
        assert mux.connects == 2


async def test_a_store_call_on_a_connection_that_went_stale_is_sent_again_on_a_new_one() -> None:
    require_redis()
    prefix = f"sbatest:{uuid.uuid4().hex[:12]}:"
    mux = Multiplexer(REDIS_URL)
    store = RedisStore(create_client(REDIS_URL), mux=mux, prefix=prefix)
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        (client_id,) = await store.call("id", [("CLIENT", "ID")])
        assert await admin.client_kill_filter(_id=client_id) == 1
        # Sent at once, before this process has read that the connection is gone.
        key = store.key("t", "k")
        assert await store.call("set", [("SET", key, "v")]) == [b"OK"]
        assert await admin.get(key) == b"v"
        assert mux.connects == 2
    finally:
        await admin.aclose()
        await store.close()
        await drop_prefix(REDIS_URL, prefix)


async def test_commands_of_callers_in_one_turn_of_the_loop_leave_in_one_write() -> None:
    """Counted at a server of ours that answers PING: ten callers, one read of ten PINGs."""
    reads: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            reads.append(data)
            writer.write(b"+PONG\r\n" * data.count(b"PING"))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    mux = Multiplexer(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    try:
        assert await mux.send([("PING",)]) == [b"PONG"]  # connected
        reads.clear()
        count = random.randint(5, 20)
        replies = await asyncio.gather(*(mux.send([("PING",)]) for _ in range(count)))
        assert replies == [[b"PONG"]] * count
        assert len(reads) == 1 and reads[0].count(b"PING") == count
    finally:
        await mux.close()
        server.close()
        await server.wait_closed()


def test_on_uvloop_the_servers_event_loop_callers_get_their_replies() -> None:
    """The server runs on uvloop, whose transports are not asyncio's classes."""
    import uvloop

    async def scenario() -> None:
        async with shared() as (mux, prefix):
            replies = await asyncio.gather(
                *(
                    mux.send([("SET", f"{prefix}{i}", i), ("GET", f"{prefix}{i}")])
                    for i in range(50)
                )
            )
            assert replies == [[b"OK", str(i).encode()] for i in range(50)]
            assert mux.connects == 1

    uvloop.run(scenario())
