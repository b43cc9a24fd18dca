"""Two deployments on one Redis, told apart only by ``SBA_REDIS__KEY_PREFIX``: neither sees the
other's run streams, rate limits, run caps, cache, idempotency keys or jobs, while two
instances of one deployment share all of them; and every key either deployment writes, the
job stream included, lies under its own prefix.

The Redis here is a private redis-server, so that a scan of its whole keyspace sees only what
these deployments wrote (the machine's Redis is shared with every other test running)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from dishka import AsyncContainer

from adapters.jobs.taskiq import run_worker
from application.conversation.ports import RunEventLog
from application.jobs.ports import DeadLetterStore, JobQueue
from application.ports import Cache, ClaimOutcome, IdempotencyStore, SchemaMigrator
from application.quota.ports import ConcurrencyGuard, RateCheck, RateLimiter, Slot
from domain.conversation.events import RunStarted
from domain.ids import RunId, TenantId, ThreadId
from domain.jobs.model import Job
from domain.quota.rate_limit import RateLimitRule
from entrypoints.ioc.container import make_container
from entrypoints.ioc.jobs import start_jobs
from entrypoints.settings import Settings, load_settings
from tests.redis_support import own_redis

T = TypeVar("T")

TENANT = TenantId("ten_shared")
RUN = RunId("run-shared")
# One request a minute with no burst beyond it: the second hit of a counter is refused.
ONE_A_MINUTE = RateLimitRule.sliding(limit=1, window_s=60, burst_ratio=0.0)
PROBE = "test.probe"  # a job kind no worker handles: it goes straight to the dead letters


@dataclass
class Deployment:
    prefix: str
    settings: Settings
    # Two instances of the deployment: one process's view and another's.
    one: AsyncContainer
    two: AsyncContainer


@contextlib.asynccontextmanager
async def deployment(root: Path, url: str, prefix: str) -> AsyncIterator[Deployment]:
    settings = load_settings(
        {
            "SBA_DATA_DIR": str(root),
            "SBA_REDIS_URL": url,
            "SBA_BROKER_URL": url,
            "SBA_REDIS__KEY_PREFIX": prefix,
            "SBA_SEED_DEMO": "false",
            "SBA_LOG__LEVEL": "WARNING",
        }
    )
    one, two = make_container(settings), make_container(settings)
    try:
        await (await one.get(SchemaMigrator)).upgrade()
        yield Deployment(prefix, settings, one, two)
    finally:
        await one.close()
        await two.close()


async def until(probe: Callable[[], Awaitable[T]], *, within_s: float, what: str) -> T:
    """Polls an outcome another task or instance produces, failing after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def worker(container: AsyncContainer) -> AsyncIterator[None]:
    """A worker of the container's deployment, consuming until the block ends."""
    broker = await start_jobs(container)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(broker, stop=stop, grace_s=5))
    try:
        yield
    finally:
        stop.set()
        await task


async def letters(container: AsyncContainer) -> set[str]:
    return {d.job.key for d in await (await container.get(DeadLetterStore)).list(limit=100)}


async def check_run_streams(a: Deployment, b: Deployment) -> None:
    started = RunStarted(thread_id=ThreadId("th"), run_id=RUN)
    log_a = await a.one.get(RunEventLog)
    await log_a.open(TENANT, RUN)
    await log_a.append(TENANT, RUN, [started])

    # Another instance of A resumes the run from Redis (once write-behind has put it there)...
    other_a = await a.two.get(RunEventLog)
    seen = await until(
        lambda: other_a.read(TENANT, RUN, after=0, wait_s=0.2),
        within_s=10,
        what="the run to reach Redis",
    )
    assert seen is not None and list(seen.events) == [started]
    # ...while B, with the same tenant and run id, has no such run.
    assert await (await b.one.get(RunEventLog)).read(TENANT, RUN, after=0, wait_s=0) is None


async def check_limits(a: Deployment, b: Deployment) -> None:
    check = [RateCheck(policy="tenant", key="runs", rule=ONE_A_MINUTE)]
    partition = f"t:{TENANT}"
    assert (await (await a.one.get(RateLimiter)).hit(partition, check)).allowed
    # A's second instance shares A's counter, which is spent...
    assert not (await (await a.two.get(RateLimiter)).hit(partition, check)).allowed
    # ...and B's counter of the same name is untouched.
    assert (await (await b.one.get(RateLimiter)).hit(partition, check)).allowed

    cap = [Slot(key="runs", cap=1)]
    assert await (await a.one.get(ConcurrencyGuard)).acquire(partition, cap, "a-1", lease_s=60)
    assert not await (await a.two.get(ConcurrencyGuard)).acquire(partition, cap, "a-2", lease_s=60)
    guard_b = await b.one.get(ConcurrencyGuard)
    assert await guard_b.acquire(partition, cap, "b-1", lease_s=60)
    assert await guard_b.held(partition, "runs") == 1


async def check_cache_and_idempotency(a: Deployment, b: Deployment) -> None:
    await (await a.one.get(Cache)).set(TENANT, "answer", b"from A", ttl_s=60)
    assert await (await a.two.get(Cache)).get(TENANT, "answer") == b"from A"
    assert await (await b.one.get(Cache)).get(TENANT, "answer") is None

    claim_a = await (await a.one.get(IdempotencyStore)).claim("key-1", "idem", "fp", lock_s=60)
    assert claim_a.outcome is ClaimOutcome.STARTED
    again_a = await (await a.two.get(IdempotencyStore)).claim("key-1", "idem", "fp", lock_s=60)
    assert again_a.outcome is ClaimOutcome.IN_FLIGHT
    claim_b = await (await b.one.get(IdempotencyStore)).claim("key-1", "idem", "fp", lock_s=60)
    assert claim_b.outcome is ClaimOutcome.STARTED


async def check_jobs(a: Deployment, b: Deployment, client: aioredis.Redis) -> None:
    # Each deployment queues a job no worker can handle: whichever worker takes it files it
    # in its own deployment's dead-letter store, so the store shows who consumed what.
    await start_jobs(a.one)
    await start_jobs(b.one)
    await (await a.one.get(JobQueue)).enqueue(Job(kind=PROBE, tenant_id=TENANT, key="queued-by-a"))
    await (await b.one.get(JobQueue)).enqueue(Job(kind=PROBE, tenant_id=TENANT, key="queued-by-b"))

    async with worker(b.two):
        await until(lambda: letters(b.one), within_s=15, what="B's worker to take B's job")
    assert await letters(b.one) == {"queued-by-b"}
    assert await letters(a.one) == set()
    # B's worker has drained B's stream; A's job is still on A's, delivered to no one.
    stream_a = a.settings.job_stream
    [group] = await client.xinfo_groups(stream_a)
    assert (group["name"], group["lag"], group["pending"]) == (f"{stream_a}:workers".encode(), 1, 0)

    async with worker(a.two):
        await until(lambda: letters(a.one), within_s=15, what="A's worker to take A's job")
    assert await letters(a.one) == {"queued-by-a"}
    assert await letters(b.one) == {"queued-by-b"}


async def test_two_deployments_on_one_redis_share_nothing_and_keep_every_key_under_their_prefix(
    tmp_path,
) -> None:
    (tmp_path / "redis").mkdir()
    with own_redis(tmp_path / "redis") as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            async with (
                deployment(tmp_path / "a", server.url, "eu:") as a,
                deployment(tmp_path / "b", server.url, "us:") as b,
            ):
                assert a.settings.job_stream == "eu:jobs"
                await check_run_streams(a, b)
                await check_limits(a, b)
                await check_cache_and_idempotency(a, b)
                await check_jobs(a, b, client)

                keys = [k.decode() async for k in client.scan_iter(count=1000)]
                outside = [k for k in keys if not k.startswith(("eu:", "us:"))]
                assert outside == []
                # Both deployments wrote limits, caps, idempotency keys and a job stream.
                for prefix in ("eu:", "us:"):
                    mine = {k for k in keys if k.startswith(prefix)}
                    assert f"{prefix}jobs" in mine
                    assert any(":rl:" in k for k in mine)
                    assert any(":cc:" in k for k in mine)
                    assert any(k.startswith(f"{prefix}{{i:") for k in mine)
                # Only A wrote a run and a cache entry.
                assert any(k.startswith("eu:{r:") for k in keys)
                assert any(k.startswith("eu:{c:") for k in keys)
        finally:
            await client.aclose()
