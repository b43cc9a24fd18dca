"""Jobs on taskiq: one task, ``sba.job``, carries every job as a msgspec-encoded envelope; the
application's ``RunJob`` dispatches it. In-process (the embedded default) the broker runs a job
as soon as it is queued; on Redis a stream with a consumer group holds it until a worker has
finished it (acknowledged after execution), and a job whose worker died is put back on the
stream once it has been idle for ``redeliver_after_s``. A worker asked to stop takes no new
job, finishes the ones it holds, and exits; it never cancels a read in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, AsyncBroker, InMemoryBroker
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

from adapters.jobs.codec import encode_job
from application.errors import ServiceUnavailable
from domain.jobs.model import Job

log = logging.getLogger("sba.jobs")

TASK_NAME = "sba.job"


def with_trace(job: Job) -> Job:
    """The job carrying the current W3C trace context (``traceparent``/``tracestate``), unless
    it carries one already (a retry keeps its original trace)."""
    if job.trace:
        return job
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return job
    return replace(job, trace=carrier)


def attach_trace(job: Job) -> object:
    """Makes the job's trace context current; returns the token to detach it with."""
    return otel_context.attach(propagate.extract(dict(job.trace)))


def detach_trace(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


def create_broker(
    url: str | None,
    *,
    queue_name: str = "sba:jobs",
    redeliver_after_s: float = 60.0,
    max_async_tasks: int = 64,
) -> AsyncBroker:
    if not url:
        # Runs a job inside ``kick``: queued in-process work is done when enqueue returns.
        return InMemoryBroker(await_inplace=True, max_async_tasks=max_async_tasks)
    # The stream named ``queue_name`` is the only key the queue keeps: no result backend (jobs
    # report through the database), no schedules, dead letters in the database, and our
    # listener takes no claim lock. Naming it under the deployment's prefix keeps it apart.
    return StoppableStreamBroker(
        url,
        queue_name=queue_name,
        consumer_group_name=f"{queue_name}:workers",
        # A group created after jobs were queued still sees them.
        consumer_id="0",
        idle_timeout=int(redeliver_after_s * 1000),
        # The claim lock must expire if its holder is killed, or no job is ever reclaimed.
        unacknowledged_lock_timeout=max(redeliver_after_s, 5.0),
        xread_block=1000,
        xread_count=max_async_tasks,
        maxlen=100_000,
    )


class StoppableStreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker with a listener that ends when asked: it checks the stop
    flag between blocking reads (at most ``xread_block`` apart) instead of being cancelled
    mid-read, which can lose the cancellation inside the Redis client and hang shutdown.
    Reclaiming a dead worker's deliveries is ``requeue_stalled``'s job, not the listener's."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stopping = asyncio.Event()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        unreachable = False
        async with Redis(connection_pool=self.connection_pool) as conn:
            while not self.stopping.is_set():
                try:
                    fetched = await conn.xreadgroup(
                        self.consumer_group_name,
                        self.consumer_name,
                        {self.queue_name: ">"},
                        block=self.block,
                        count=self.count,
                    )
                except ResponseError as exc:
                    if not str(exc).startswith("NOGROUP"):
                        raise
                    # Redis came back without the stream (restarted with nothing on disk, or
                    # the key was deleted): the group is made again, at 0, so the jobs queued
                    # since are read. Raising instead would restart this listener at once, and
                    # again, for as long as the group is missing.
                    log.warning("the job group %s is missing; creating it", self.queue_name)
                    with contextlib.suppress(RedisError):
                        await self._declare_consumer_group()
                    continue
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    # Redis is unreachable: try again each second rather than spin.
                    if not unreachable:
                        log.warning("cannot read jobs (%s); trying again each second", exc)
                        unreachable = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), 1.0)
                    continue
                if unreachable:
                    log.info("reading jobs again")
                    unreachable = False
                # RESP2: [[stream, [[entry id, {field: value}], …]], …]; RESP3: a dict.
                found: Any = fetched or []
                streams = found.items() if isinstance(found, dict) else found
                for stream, entries in streams:
                    for entry_id, fields in entries:
                        yield AckableMessage(
                            data=fields[b"data"],
                            ack=self._ack_generator(id=entry_id, queue_name=stream),
                        )


class TaskiqJobQueue:
    """``JobQueue`` on a taskiq broker."""

    def __init__(self, broker: AsyncBroker) -> None:
        self._broker = broker
        self._in_process = isinstance(broker, InMemoryBroker)
        self._later: set[asyncio.TimerHandle | asyncio.Task[None]] = set()

    async def enqueue(self, job: Job) -> None:
        task = self._broker.find_task(TASK_NAME)
        if task is None:
            raise ServiceUnavailable("the job task is not registered with the broker")
        try:
            await task.kiq(encode_job(with_trace(job)))
        except ServiceUnavailable:
            raise
        except Exception as exc:
            log.warning("a job could not be queued: %s: %s", type(exc).__name__, exc)
            raise ServiceUnavailable("the job queue is unavailable") from exc

    async def enqueue_later(self, job: Job, delay_ms: int) -> None:
        if self._in_process:
            # In-process jobs live and die with this process anyway; a timer keeps the
            # retry from holding up whoever queued the first attempt.
            loop = asyncio.get_running_loop()

            def fire() -> None:
                self._later.discard(handle)
                t = loop.create_task(self._retry(job))
                self._later.add(t)
                t.add_done_callback(self._later.discard)

            handle = loop.call_later(delay_ms / 1000, fire)
            self._later.add(handle)
            return
        # On a broker the delivery that failed is acknowledged only after this returns, so
        # waiting here keeps the job durable through the backoff.
        await asyncio.sleep(delay_ms / 1000)
        await self.enqueue(job)

    async def _retry(self, job: Job) -> None:
        try:
            await self.enqueue(job)
        except Exception:
            log.exception("could not queue the retry of job %s %s", job.kind, job.key)

    def pending_retries(self) -> int:
        return len(self._later)

    async def depth(self) -> int:
        """Jobs not yet finished: on Redis, those the workers' group has not read yet (its
        lag) plus those read but not acknowledged; in-process, the retries waiting for their
        backoff."""
        broker = self._broker
        waiting = self.pending_retries()
        if not isinstance(broker, RedisStreamBroker):
            return waiting
        async with Redis(connection_pool=broker.connection_pool) as client:
            try:
                groups = await client.xinfo_groups(broker.queue_name)
            except RedisError as exc:
                if "no such key" in str(exc).lower():
                    return waiting
                raise
            for raw in groups:
                group: dict[str, Any] = {
                    (k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()
                }
                name = group.get("name")
                if isinstance(name, bytes):
                    name = name.decode()
                if name != broker.consumer_group_name:
                    continue
                lag = group.get("lag")
                pending = int(group.get("pending") or 0)
                if lag is None:  # Redis cannot tell after deletions: count the whole stream
                    lag = await client.xlen(broker.queue_name)
                return waiting + int(lag) + pending
            return waiting + int(await client.xlen(broker.queue_name))

    def close(self) -> None:
        for h in list(self._later):
            h.cancel()
        self._later.clear()


# Deliveries idle longer than ARGV[1] ms (their worker died) go back on the stream as new
# messages and the stale delivery is acknowledged, in one atomic step.
_REQUEUE = """
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], 'sba-requeue', ARGV[1], '0-0',
  'COUNT', 100)
local n = 0
for _, entry in ipairs(claimed[2]) do
  local id, fields = entry[1], entry[2]
  if fields then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    n = n + 1
  end
  redis.call('XACK', KEYS[1], ARGV[2], id)
end
if n > 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[2], 'sba-requeue') end
return n
"""


async def requeue_stalled(broker: AsyncBroker, *, idle_s: float) -> int:
    """Puts deliveries whose worker died back on the stream; returns how many. (taskiq-redis
    reclaims idle deliveries only after new messages arrive, so a quiet queue would hold a dead
    worker's job for ever.)"""
    if not isinstance(broker, RedisStreamBroker):
        return 0
    async with Redis(connection_pool=broker.connection_pool) as client:
        count = await client.eval(
            _REQUEUE,
            1,
            broker.queue_name,
            int(idle_s * 1000),
            broker.consumer_group_name,
        )
    return int(count)


async def run_worker(
    broker: AsyncBroker,
    *,
    max_async_tasks: int = 64,
    redeliver_after_s: float = 60.0,
    stop: asyncio.Event | None = None,
    grace_s: float = 30.0,
) -> None:
    """Consumes jobs until ``stop`` is set or this is cancelled; each job is acknowledged only
    after it has run. Deliveries stalled longer than ``redeliver_after_s`` are put back for any
    worker to take. Stopping takes no new job and lets the running ones finish, for up to
    ``grace_s``; a job cut off then is not acknowledged, so it is delivered again."""
    if not isinstance(broker, StoppableStreamBroker):
        raise TypeError("a worker consumes from the Redis stream broker")

    async def requeue() -> None:
        while True:
            await asyncio.sleep(max(redeliver_after_s / 2, 0.2))
            try:
                n = await requeue_stalled(broker, idle_s=redeliver_after_s)
            except Exception:
                log.exception("could not requeue stalled jobs")
                continue
            if n:
                log.warning("requeued %d job(s) whose worker stopped answering", n)

    async def receive() -> None:
        # The receiver ends by raising CancelledError once its listener is exhausted.
        with contextlib.suppress(asyncio.CancelledError):
            await run_receiver_task(
                broker,
                max_async_tasks=max_async_tasks,
                ack_time=AcknowledgeType.WHEN_EXECUTED,
                run_startup=False,
            )

    broker.stopping.clear()
    reclaimer = asyncio.create_task(requeue())
    receiver = asyncio.create_task(receive())
    stopper = asyncio.create_task((stop or asyncio.Event()).wait())
    try:
        await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        broker.stopping.set()
        stopper.cancel()
        reclaimer.cancel()
        # Shielded: a cancelled worker still winds down in order rather than mid-read.
        done, _ = await asyncio.shield(asyncio.wait({receiver}, timeout=grace_s))
        if not done:
            log.warning("jobs still running after %.0f s; leaving them to be redelivered", grace_s)
            receiver.cancel()
    if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
        raise receiver.exception()  # type: ignore[misc]


def is_in_process(broker: AsyncBroker) -> bool:
    return isinstance(broker, InMemoryBroker)
