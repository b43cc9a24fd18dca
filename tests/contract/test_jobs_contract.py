"""Contracts of the background-work ports: DeadLetterStore and RenderJobRepository on memory,
SQLite and Postgres; ReplayGuard on memory and Redis; JobQueue on the in-process broker and on
Redis streams with a worker, with the W3C trace context of the enqueuer current in the job."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from adapters.jobs.codec import decode_job
from adapters.jobs.taskiq import (
    TASK_NAME,
    TaskiqJobQueue,
    attach_trace,
    create_broker,
    detach_trace,
    run_worker,
)
from adapters.memory.jobs import MemoryDeadLetterStore, MemoryRenderJobRepository
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.replay import MemoryReplayGuard
from adapters.redis.replay import RedisReplayGuard
from adapters.sqla.jobs import SqlaDeadLetterStore, SqlaRenderJobRepository
from adapters.sqla.uow import SqlaUnitOfWork
from application.errors import Conflict, NotFound, ServiceUnavailable
from application.ports import UnitOfWork
from application.render.ports import RenderJobRepository
from domain.audit.events import render_finished, render_requested
from domain.ids import TenantId
from domain.jobs.model import DeadLetter, Job
from domain.render.model import RenderFormat, RenderJob, RenderState
from tests.audit_support import actions, break_audit_appends, verified_trail
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture
from tests.redis_support import (
    REDIS_URL,
    drop_prefix,
    new_prefix,
    own_redis,
    redis_store,
    require_redis,
)

A, B = TenantId("ten_a"), TenantId("ten_b")
SQL_KINDS = ["memory", "sqlite", "postgres"]


# --- DeadLetterStore ---------------------------------------------------------------------


@pytest.fixture(params=SQL_KINDS)
async def letters(request, tmp_path) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryDeadLetterStore()
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield SqlaDeadLetterStore(db)


def letter(key: str, at: int, tenant: TenantId = A, **job: object) -> DeadLetter:
    j = Job(kind="kb.index", tenant_id=tenant, key=key, **job)  # type: ignore[arg-type]
    return DeadLetter(id=DeadLetter.letter_id(j), job=j, error=f"boom {key}", failed_at_ms=at)


async def test_dead_letters_are_listed_oldest_first_across_tenants(letters) -> None:
    await letters.add(letter("k1", 30))
    await letters.add(letter("k2", 10, B))
    await letters.add(letter("k3", 20))
    listed = await letters.list(limit=10)
    assert [d.job.key for d in listed] == ["k2", "k3", "k1"]
    assert [d.job.key for d in await letters.list(limit=2)] == ["k2", "k3"]
    assert await letters.count() == 3


async def test_a_dead_letter_reads_back_with_its_whole_job(letters) -> None:
    original = letter(
        "doc-1",
        5,
        args={"document_id": "doc-1", "digest": "ab" * 16, "note": "ünïcode ✓"},
        attempt=3,
        trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    )
    await letters.add(original)
    got = await letters.get(original.id)
    assert got == original
    assert got.job.args == original.job.args and got.job.trace == original.job.trace
    assert await letters.get("dlq_missing") is None


async def test_the_same_work_dead_lettered_again_is_one_letter_with_the_latest_error(
    letters,
) -> None:
    first = letter("k1", 10)
    again = DeadLetter(id=first.id, job=first.job, error="second failure", failed_at_ms=99)
    await letters.add(first)
    await letters.add(again)
    assert await letters.count() == 1
    assert await letters.get(first.id) == again
    # Same key in another tenant, or another kind, is other work.
    other_tenant = letter("k1", 11, B)
    assert other_tenant.id != first.id
    await letters.add(other_tenant)
    assert await letters.count() == 2


async def test_removing_a_letter_happens_once(letters) -> None:
    d = letter("k1", 10)
    await letters.add(d)
    assert await letters.remove(d.id) is True
    assert await letters.remove(d.id) is False
    assert await letters.get(d.id) is None
    assert await letters.count() == 0


# --- RenderJobRepository -----------------------------------------------------------------


@dataclass
class RenderSubject:
    renders: RenderJobRepository
    uow: UnitOfWork  # reads the audit trail the renders are written to


@pytest.fixture(params=SQL_KINDS)
async def render_subject(request, tmp_path) -> AsyncIterator[RenderSubject]:
    if request.param == "memory":
        uow = MemoryUnitOfWork()
        yield RenderSubject(MemoryRenderJobRepository(uow), uow)
        return
    async with sql_database(request.param, request, tmp_path, tenants=(A, B)) as db:
        yield RenderSubject(SqlaRenderJobRepository(db), SqlaUnitOfWork(db))


@pytest.fixture
def renders(render_subject: RenderSubject) -> RenderJobRepository:
    return render_subject.renders


async def add(renders: RenderJobRepository, job: RenderJob) -> None:
    await renders.add(job, audit=render_requested(job, actor=job.requested_by))


def render(id: str = "r1", tenant: TenantId = A, template: str = "inline:x") -> RenderJob:
    return RenderJob(
        id=id,
        tenant_id=tenant,
        template=template,
        data={"n": 7, "lines": [{"item": "Teh ✓", "qty": 2}], "nested": {"a": None}},
        formats=(RenderFormat.MARKDOWN, RenderFormat.PDF),
        requested_by="user:u1",
        created_at_ms=1,
        updated_at_ms=1,
    )


def fields(job: RenderJob) -> tuple[object, ...]:
    return (
        job.id,
        job.tenant_id,
        job.template,
        dict(job.data),
        job.formats,
        job.requested_by,
        job.state,
        job.attempts,
        job.error,
        job.artifacts,
        job.created_at_ms,
        job.updated_at_ms,
    )


async def test_a_render_reads_back_field_for_field(renders) -> None:
    job = render()
    await add(renders, job)
    got = await renders.get(A, "r1")
    assert got is not None and fields(got) == fields(job)


async def test_a_saved_render_keeps_every_change_of_state(renders) -> None:
    await add(renders, render())
    job = await renders.get(A, "r1")
    job.start(5)
    await renders.save(job)
    job.fail("converter crashed", 6)
    await renders.save(job)
    job.start(7)
    job.complete({"markdown": "k/md", "pdf": "k/pdf"}, 8)
    await renders.save(job)
    got = await renders.get(A, "r1")
    assert fields(got) == fields(job)
    assert (got.state, got.attempts, got.error) == (RenderState.DONE, 2, None)


async def test_render_ids_are_per_tenant_and_never_cross(renders) -> None:
    await add(renders, render("same", A))
    await add(renders, render("same", B, template="inline:b"))
    assert (await renders.get(A, "same")).template == "inline:x"
    assert (await renders.get(B, "same")).template == "inline:b"
    assert await renders.get(B, "only-a") is None
    await add(renders, render("only-a", A))
    assert await renders.get(B, "only-a") is None
    with pytest.raises(NotFound):
        await renders.save(render("only-a", B))
    assert (await renders.get(A, "only-a")).tenant_id == A


async def test_adding_a_render_twice_is_a_conflict_and_saving_an_unknown_one_not_found(
    renders,
) -> None:
    await add(renders, render())
    with pytest.raises(Conflict):
        await add(renders, render())
    with pytest.raises(NotFound):
        await renders.save(render("never-added"))


async def test_a_read_render_is_a_copy_not_the_stored_one(renders) -> None:
    await add(renders, render())
    job = await renders.get(A, "r1")
    job.start(9)
    assert (await renders.get(A, "r1")).state is RenderState.QUEUED


async def test_a_requested_render_is_on_its_tenants_audit_trail_without_its_data(
    render_subject: RenderSubject,
) -> None:
    await add(render_subject.renders, render("r1", template="kb:price-list"))
    await add(render_subject.renders, render("r1", B))
    entries = await verified_trail(render_subject.uow, A)
    assert [(e.action, e.subject, e.actor, e.at_ms) for e in entries] == [
        ("render.requested", "r1", "user:u1", 1)
    ]
    assert dict(entries[0].details) == {"template": "kb:price-list", "formats": "markdown,pdf"}
    assert "Teh" not in repr(entries)
    assert actions(await verified_trail(render_subject.uow, B)) == ["render.requested"]


async def test_a_render_that_ends_is_on_the_trail_with_its_outcome_and_error_code(
    render_subject: RenderSubject,
) -> None:
    renders = render_subject.renders
    await add(renders, render())
    job = await renders.get(A, "r1")
    job.start(5)
    await renders.save(job)  # a start is not audited
    job.fail("the template says {{ secret }}", 6)
    await renders.save(job, audit=render_finished(job, error_code="template_failed"))
    job.start(7)
    await renders.save(job)
    job.complete({"markdown": "k/md", "pdf": "k/pdf"}, 8)
    await renders.save(job, audit=render_finished(job))
    entries = await verified_trail(render_subject.uow, A)
    assert [(e.action, e.at_ms) for e in entries] == [
        ("render.requested", 1),
        ("render.finished", 6),
        ("render.finished", 8),
    ]
    failed, done = dict(entries[1].details), dict(entries[2].details)
    assert failed == {
        "status": "failed",
        "formats": "markdown,pdf",
        "attempts": "1",
        "error": "template_failed",
    }
    assert done == {"status": "done", "formats": "markdown,pdf", "attempts": "2"}
    assert entries[2].actor == "system:render" and entries[2].subject == "r1"
    assert "secret" not in repr(entries)


async def test_a_render_change_that_is_not_stored_leaves_no_audit_entry(
    render_subject: RenderSubject,
) -> None:
    renders = render_subject.renders
    await add(renders, render())
    with pytest.raises(Conflict):
        await add(renders, render())
    unknown = render("never-added")
    unknown.start(2)
    unknown.complete({"markdown": "k", "pdf": "k"}, 3)
    with pytest.raises(NotFound):
        await renders.save(unknown, audit=render_finished(unknown))
    assert actions(await verified_trail(render_subject.uow, A)) == ["render.requested"]


async def test_a_render_whose_audit_entry_fails_is_not_stored(
    render_subject: RenderSubject, monkeypatch
) -> None:
    renders = render_subject.renders
    await add(renders, render("r1"))
    job = await renders.get(A, "r1")
    job.start(2)
    job.complete({"markdown": "k", "pdf": "k"}, 3)
    with monkeypatch.context() as patched:
        break_audit_appends(patched)
        with pytest.raises(ServiceUnavailable):
            await add(renders, render("r2"))
        with pytest.raises(ServiceUnavailable):
            await renders.save(job, audit=render_finished(job))
    assert await renders.get(A, "r2") is None
    assert (await renders.get(A, "r1")).state is RenderState.QUEUED
    assert actions(await verified_trail(render_subject.uow, A)) == ["render.requested"]


# --- ReplayGuard -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def open_guard(kind: str) -> AsyncIterator[object]:
    if kind == "memory":
        yield MemoryReplayGuard()
        return
    async with redis_store() as store:
        yield RedisReplayGuard(store)


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_digest_is_first_seen_once_per_scope(kind) -> None:
    async with open_guard(kind) as guard:
        assert await guard.first_seen("basehub:acme", "d1", window_s=60) is True
        assert await guard.first_seen("basehub:acme", "d1", window_s=60) is False
        assert await guard.first_seen("basehub:other", "d1", window_s=60) is True
        assert await guard.first_seen("basehub:acme", "d2", window_s=60) is True


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_concurrent_deliveries_of_one_digest_let_exactly_one_through(kind) -> None:
    async with open_guard(kind) as guard:
        seen = await asyncio.gather(
            *(guard.first_seen("s", "same", window_s=60) for _ in range(50))
        )
        assert seen.count(True) == 1


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_replay_guard_admits_exactly_the_first_of_each_pair(kind) -> None:
    pairs = st.tuples(st.sampled_from(["s1", "s2", "s:3"]), st.text(min_size=1, max_size=8))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(pairs, max_size=30))
    def check(sequence: list[tuple[str, str]]) -> None:
        async def run() -> None:
            async with open_guard(kind) as guard:
                seen: set[tuple[str, str]] = set()
                for scope, digest in sequence:
                    first = await guard.first_seen(scope, digest, window_s=60)
                    assert first is ((scope, digest) not in seen)
                    seen.add((scope, digest))

        asyncio.run(run())

    check()


async def test_the_memory_guard_forgets_a_digest_after_its_window_and_stays_bounded() -> None:
    clock = FakeClock()
    guard = MemoryReplayGuard(clock=clock, max_entries=3)
    assert await guard.first_seen("s", "d", window_s=10) is True
    clock.now += 9.9
    assert await guard.first_seen("s", "d", window_s=10) is False
    clock.now += 0.2
    assert await guard.first_seen("s", "d", window_s=10) is True
    for i in range(10):
        assert await guard.first_seen("s", f"x{i}", window_s=10) is True
    assert len(guard._seen) <= 3


async def test_the_redis_guard_remembers_a_digest_for_its_window_only() -> None:
    async with redis_store() as store:
        guard = RedisReplayGuard(store)
        assert await guard.first_seen("s", "d", window_s=30) is True
        ttl = await store.client.pttl(store.key("r:s", "d"))
        assert 0 < ttl <= 30_000


# --- JobQueue ----------------------------------------------------------------------------


class Recorder:
    """A job task that records each job it receives and the trace id current while it ran."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, int]] = []
        self.arrived = asyncio.Event()

    def task(self):  # taskiq registers functions
        async def sba_job(payload: str) -> None:
            await self.receive(payload)

        return sba_job

    async def receive(self, payload: str) -> None:
        job = decode_job(payload)
        token = attach_trace(job)
        try:
            current = trace.get_current_span().get_span_context().trace_id
        finally:
            detach_trace(token)
        self.jobs.append((job, current))
        self.arrived.set()

    async def wait_for(self, count: int, within_s: float = 15.0) -> None:
        async def until() -> None:
            while len(self.jobs) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), within_s)


@contextlib.asynccontextmanager
async def open_queue(kind: str) -> AsyncIterator[tuple[TaskiqJobQueue, Recorder]]:
    recorder = Recorder()
    if kind == "in-process":
        broker = create_broker(None)
        broker.register_task(recorder.task(), task_name=TASK_NAME)
        await broker.startup()
        queue = TaskiqJobQueue(broker)
        try:
            yield queue, recorder
        finally:
            queue.close()
            await broker.shutdown()
        return
    require_redis()
    prefix = new_prefix()
    broker = create_broker(REDIS_URL, queue_name=f"{prefix}jobs", redeliver_after_s=5)
    broker.register_task(recorder.task(), task_name=TASK_NAME)
    await broker.startup()
    worker = asyncio.create_task(run_worker(broker, redeliver_after_s=5))
    queue = TaskiqJobQueue(broker)
    try:
        yield queue, recorder
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        queue.close()
        await broker.shutdown()
        await drop_prefix(REDIS_URL, prefix)


@contextlib.contextmanager
def current_trace(trace_id: int) -> AsyncIterator[None]:
    span = NonRecordingSpan(
        SpanContext(
            trace_id=trace_id,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


QUEUES = ["in-process", "redis"]


@pytest.mark.parametrize("kind", QUEUES)
async def test_a_queued_job_arrives_whole_in_the_enqueuers_trace(kind) -> None:
    trace_id = uuid.uuid4().int
    job = Job(
        kind="render.run",
        tenant_id=A,
        key="render:r1",
        args={"render_id": "r1", "tenant_slug": "acme ✓"},
        attempt=2,
    )
    async with open_queue(kind) as (queue, recorder):
        with current_trace(trace_id):
            await queue.enqueue(job)
        await recorder.wait_for(1)
    got, current = recorder.jobs[0]
    assert (got.kind, got.tenant_id, got.key, dict(got.args), got.attempt) == (
        job.kind,
        job.tenant_id,
        job.key,
        dict(job.args),
        job.attempt,
    )
    assert got.trace["traceparent"] == f"00-{trace_id:032x}-00f067aa0ba902b7-01"
    assert current == trace_id


@pytest.mark.parametrize("kind", QUEUES)
async def test_a_retry_keeps_the_trace_it_started_in(kind) -> None:
    first, second = uuid.uuid4().int, uuid.uuid4().int
    async with open_queue(kind) as (queue, recorder):
        with current_trace(first):
            await queue.enqueue(Job(kind="k", tenant_id=A, key="a"))
        await recorder.wait_for(1)
        carried = recorder.jobs[0][0]
        with current_trace(second):
            await queue.enqueue(carried.next_attempt())
        await recorder.wait_for(2)
    assert [current for _, current in recorder.jobs] == [first, first]
    assert recorder.jobs[1][0].attempt == 2


@pytest.mark.parametrize("kind", QUEUES)
async def test_a_job_queued_for_later_arrives_after_its_delay_and_not_before(kind) -> None:
    async with open_queue(kind) as (queue, recorder):
        started = time.monotonic()
        await queue.enqueue_later(Job(kind="k", tenant_id=A, key="later"), 300)
        await recorder.wait_for(1)
        waited = time.monotonic() - started
    assert waited >= 0.3
    assert recorder.jobs[0][0].key == "later"


@pytest.mark.parametrize("kind", QUEUES)
async def test_every_job_queued_at_once_arrives_exactly_once(kind) -> None:
    async with open_queue(kind) as (queue, recorder):
        await asyncio.gather(
            *(queue.enqueue(Job(kind="k", tenant_id=A, key=f"j{i}")) for i in range(40))
        )
        await recorder.wait_for(40)
    keys = sorted(j.key for j, _ in recorder.jobs)
    assert keys == sorted(f"j{i}" for i in range(40))


async def test_a_broker_that_cannot_be_reached_is_service_unavailable() -> None:
    broker = create_broker("redis://127.0.0.1:1/0", queue_name=f"{new_prefix()}jobs")
    broker.register_task(Recorder().task(), task_name=TASK_NAME)
    queue = TaskiqJobQueue(broker)
    try:
        with pytest.raises(ServiceUnavailable):
            await queue.enqueue(Job(kind="k", tenant_id=A, key="x"))
    finally:
        await broker.shutdown()


async def test_a_worker_reads_jobs_again_after_redis_restarts_empty(tmp_path, caplog) -> None:
    with own_redis(tmp_path) as server:
        recorder = Recorder()
        broker = create_broker(server.url, queue_name="sba:jobs", redeliver_after_s=5)
        broker.register_task(recorder.task(), task_name=TASK_NAME)
        await broker.startup()
        worker = asyncio.create_task(run_worker(broker, redeliver_after_s=5))
        queue = TaskiqJobQueue(broker)
        try:
            await queue.enqueue(Job(kind="k", tenant_id=A, key="before"))
            await recorder.wait_for(1)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(2.5)  # the worker meets Redis gone for a while
            # Back with nothing: no stream, no consumer group.
            await asyncio.to_thread(server.start)
            await queue.enqueue(Job(kind="k", tenant_id=A, key="after"))
            await recorder.wait_for(2)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            queue.close()
            await broker.shutdown()
    assert [job.key for job, _ in recorder.jobs] == ["before", "after"]
    # The outage is reported once, not once per failed read in a tight loop.
    restarts = [r for r in caplog.records if "while listening to the broker" in r.getMessage()]
    assert restarts == []
    unreachable = [r for r in caplog.records if r.getMessage().startswith("cannot read jobs")]
    assert len(unreachable) == 1
