"""The asyncpg pool of the Postgres hot paths (the journal, the search) against the machine's
Postgres: bounded, fair to waiters, and never handing out a connection in an unknown state."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from adapters.postgres.pool import LazyPool
from tests.pg import ADMIN_DSN, _admin


async def backend_pid(pool: LazyPool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


@pytest.fixture
async def pool():
    (await _admin()).terminate()  # skips (or fails under CI) when Postgres is not reachable
    made = LazyPool(ADMIN_DSN, size=2)
    try:
        yield made
    finally:
        await made.close()


async def test_more_callers_than_connections_are_all_served_by_at_most_size_connections(
    pool,
) -> None:
    assert pool.made is None  # nothing opened before the first use
    pids = await asyncio.gather(
        *(pool.fetch("SELECT pg_backend_pid(), pg_sleep(0.01)") for _ in range(20))
    )
    assert len({rows[0][0] for rows in pids}) <= 2
    assert pool._open <= 2


async def test_a_connection_is_reused_after_a_statement_postgres_refused(pool) -> None:
    first = await backend_pid(pool)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert await backend_pid(pool) == first


async def test_a_connection_given_back_mid_statement_is_closed_not_reused(pool) -> None:
    first = await backend_pid(pool)
    started = asyncio.Event()

    async def slow() -> None:
        async with pool.acquire() as conn:
            started.set()
            await conn.fetchval("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its protocol state is unknown: a fresh connection serves the next caller.
    assert await backend_pid(pool) != first
    assert pool._open == 1


async def test_a_waiter_that_gives_up_leaves_the_connection_for_the_next(pool) -> None:
    one = LazyPool(ADMIN_DSN, size=1)
    try:
        async with one.acquire():
            waiter = asyncio.create_task(backend_pid(one))
            await asyncio.sleep(0)  # one turn of the loop: the waiter queues behind the holder
            assert len(one._waiting) == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # Given back to nobody waiting: idle, and the next caller has it at once.
        assert len(one._idle) == 1
        assert await asyncio.wait_for(backend_pid(one), timeout=5) > 0
    finally:
        await one.close()


async def test_a_connection_that_cannot_be_opened_lets_the_next_caller_try(pool) -> None:
    broken = LazyPool("postgresql://postgres@127.0.0.1:1/postgres", size=1, connect_timeout_s=1)
    try:
        for _ in range(2):  # the failed attempt gave its place back
            with pytest.raises(ConnectionRefusedError):
                await broken.fetch("SELECT 1")
        assert broken._open == 0
    finally:
        await broken.close()


async def test_a_closed_pool_refuses_new_work_and_closes_its_connections(pool) -> None:
    await backend_pid(pool)
    (idle,) = pool._idle
    await pool.close()
    assert idle.is_closed()
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await pool.fetch("SELECT 1")
