"""RunEventLog contract, run against every adapter: in memory, on Redis read by the writing
instance, and on Redis read by another instance (a client that resumed elsewhere). Redis
reaches other instances by write-behind: ``settle`` waits for it where a test reads at once
without waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adapters.memory.event_log import MemoryRunEventLog
from adapters.redis.client import RedisStore
from adapters.redis.event_log import RedisRunEventLog, decode_events, encode_events
from application.conversation.ports import RunEventLog
from application.errors import ServiceUnavailable
from domain.conversation.events import (
    RunFailed,
    RunFinished,
    RunStarted,
    StateDelta,
    StateSnapshot,
    StepFinished,
    StepStarted,
    TextDelta,
    TextMessageEnded,
    TextMessageStarted,
    ToolCallArgs,
    ToolCallEnded,
    ToolCallResult,
    ToolCallStarted,
)
from domain.conversation.model import Usage
from domain.ids import MessageId, RunId, TenantId, ThreadId
from tests.redis_support import own_redis, redis_store

A, B = TenantId("ten_a"), TenantId("ten_b")
RUN = RunId("run-1")
START = RunStarted(thread_id=ThreadId("th"), run_id=RUN)
END = RunFinished(thread_id=ThreadId("th"), run_id=RUN, usage=Usage())


def delta(i: int) -> TextDelta:
    return TextDelta(MessageId("m"), f"tok{i}")


class Split:
    """Writes through one log and reads through another (or the same)."""

    def __init__(self, writer: RunEventLog, reader: RunEventLog) -> None:
        self.writer, self.reader = writer, reader

    async def open(self, tenant_id, run_id) -> None:
        await self.writer.open(tenant_id, run_id)

    async def append(self, tenant_id, run_id, events) -> int:
        return await self.writer.append(tenant_id, run_id, events)

    async def read(self, tenant_id, run_id, *, after, wait_s):
        await self.settle()
        return await self.reader.read(tenant_id, run_id, after=after, wait_s=wait_s)

    async def end_lost(self, tenant_id, run_id, event) -> bool:
        """Ends the run from the reading instance, as a sweep there would."""
        await self.settle()
        ended = await self.reader.end_lost(tenant_id, run_id, event)
        if isinstance(self.reader, RedisRunEventLog):
            await self.reader.flushed()
        return ended

    async def settle(self) -> None:
        """Ends a flush: what was appended so far is written (Redis) before what follows."""
        if isinstance(self.writer, RedisRunEventLog):
            await self.writer.flushed()


KINDS = ["memory", "redis-same-instance", "redis-other-instance"]


@contextlib.asynccontextmanager
async def open_log(kind: str, **kw) -> AsyncIterator[Split]:
    if kind == "memory":
        log = MemoryRunEventLog(**kw)
        yield Split(log, log)
        return
    options = {"max_events": kw.get("max_events_per_run", 10_000)}
    async with redis_store() as store:
        writer = RedisRunEventLog(store, **options)
        reader = writer if kind == "redis-same-instance" else RedisRunEventLog(store, **options)
        yield Split(writer, reader)
        await writer.flushed()


@pytest.fixture(params=KINDS)
async def make_log(request) -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**kw) -> Split:
            return await stack.enter_async_context(open_log(request.param, **kw))

        yield make


async def test_sequence_numbers_start_at_one_and_have_no_gaps(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    assert await log.append(A, RUN, [START]) == 1
    assert await log.append(A, RUN, [delta(0), delta(1)]) == 3
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, batch.last_seq, list(batch.events)) == (
        1,
        3,
        [START, delta(0), delta(1)],
    )


async def test_reading_after_a_sequence_number_returns_only_later_events(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0), delta(1), delta(2)])
    batch = await log.read(A, RUN, after=2, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events)) == (3, [delta(1), delta(2)])


async def test_another_tenant_cannot_read_the_run(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    assert await log.read(B, RUN, after=0, wait_s=0) is None


async def test_two_tenants_may_use_the_same_run_id_without_mixing(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0)])
    await log.open(B, RUN)
    await log.append(B, RUN, [START, delta(7)])
    a, b = await log.read(A, RUN, after=0, wait_s=0), await log.read(B, RUN, after=0, wait_s=0)
    assert a is not None and list(a.events) == [START, delta(0)]
    assert b is not None and list(b.events) == [START, delta(7)]


async def test_unknown_run_reads_as_none(make_log) -> None:
    assert await (await make_log()).read(A, RunId("nope"), after=0, wait_s=0) is None


async def test_a_waiting_reader_is_woken_by_an_append(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    reader = asyncio.create_task(log.read(A, RUN, after=1, wait_s=30))
    await asyncio.sleep(0)  # let the reader start waiting: ordering, not timing
    assert not reader.done()
    await log.append(A, RUN, [delta(0)])
    batch = await asyncio.wait_for(reader, 5)
    assert batch is not None and list(batch.events) == [delta(0)]


async def test_a_waiting_reader_times_out_with_an_empty_open_batch(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    batch = await log.read(A, RUN, after=1, wait_s=0.01)
    assert batch is not None
    assert (list(batch.events), batch.complete) == ([], False)


async def test_the_terminal_event_completes_the_log_and_later_appends_fail(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, END])
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None and batch.complete
    # A complete log never makes a reader wait.
    tail = await log.read(A, RUN, after=2, wait_s=30)
    assert tail is not None and tail.complete and not tail.events
    with pytest.raises(ValueError, match="ended"):
        await log.append(A, RUN, [delta(9)])


async def test_a_full_buffer_drops_the_oldest_and_shows_the_gap(make_log) -> None:
    log = await make_log(max_events_per_run=3)
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0), delta(1), delta(2), delta(3)])
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events)) == (3, [delta(1), delta(2), delta(3)])


async def test_finished_runs_beyond_the_retention_count_are_forgotten() -> None:
    log = MemoryRunEventLog(max_finished_runs=2)
    for i in range(3):
        run = RunId(f"r{i}")
        await log.open(A, run)
        await log.append(A, run, [RunStarted(thread_id=ThreadId("th"), run_id=run), END])
    assert await log.read(A, RunId("r0"), after=0, wait_s=0) is None
    assert await log.read(A, RunId("r2"), after=0, wait_s=0) is not None


async def test_a_resume_inside_one_flush_of_appends_gets_only_the_rest(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    events = [START, *(delta(i) for i in range(7))]
    # Appended between two flushes: on Redis they are one entry.
    for part in (events[:1], events[1:4], events[4:]):
        await log.append(A, RUN, part)
    for after in range(len(events) + 1):
        batch = await log.read(A, RUN, after=after, wait_s=0)
        assert batch is not None
        assert list(batch.events) == events[after:]
        if batch.events:
            assert batch.first_seq == after + 1


async def test_appends_to_several_runs_between_flushes_stay_apart(make_log) -> None:
    log = await make_log()
    other = RunId("run-2")
    for tenant, run in ((A, RUN), (A, other), (B, RUN)):
        await log.open(tenant, run)
    await log.append(A, RUN, [START, delta(1)])
    await log.append(B, RUN, [START])
    await log.append(A, other, [START, delta(2), delta(3)])
    await log.append(A, RUN, [delta(4), END])
    await log.append(B, RUN, [delta(5)])
    a, a2, b = (
        await log.read(A, RUN, after=0, wait_s=0),
        await log.read(A, other, after=0, wait_s=0),
        await log.read(B, RUN, after=0, wait_s=0),
    )
    assert a is not None and (list(a.events), a.complete) == (
        [START, delta(1), delta(4), END],
        True,
    )
    assert a2 is not None and (list(a2.events), a2.complete) == ([START, delta(2), delta(3)], False)
    assert b is not None and (list(b.events), b.complete) == ([START, delta(5)], False)


async def test_a_reader_waiting_at_the_tail_is_told_when_the_run_ends(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0)])
    await log.settle()
    reader = asyncio.create_task(log.reader.read(A, RUN, after=2, wait_s=30))
    await asyncio.sleep(0)  # let the reader start waiting: ordering, not timing
    await log.append(A, RUN, [END])
    batch = await asyncio.wait_for(reader, 5)
    assert batch is not None
    assert (batch.first_seq, list(batch.events), batch.complete) == (3, [END], True)
    tail = await log.read(A, RUN, after=3, wait_s=30)
    assert tail is not None and tail.complete and not tail.events


async def test_the_window_of_newest_events_may_begin_inside_an_earlier_flush(make_log) -> None:
    log = await make_log(max_events_per_run=3)
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0)])
    await log.settle()
    await log.append(A, RUN, [delta(1), delta(2)])
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events)) == (2, [delta(0), delta(1), delta(2)])
    await log.append(A, RUN, [delta(3), delta(4), delta(5), END])
    batch = await log.read(A, RUN, after=2, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events), batch.complete) == (
        6,
        [delta(4), delta(5), END],
        True,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_any_append_pattern_reads_back_in_order_from_any_point(kind) -> None:
    @settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
    @given(st.lists(st.integers(1, 6), min_size=1, max_size=20), st.integers(0, 40))
    def run(sizes, after) -> None:
        async def scenario() -> None:
            async with open_log(kind) as log:
                await log.open(A, RUN)
                events = [delta(i) for i in range(sum(sizes))]
                i = 0
                for size in sizes:
                    await log.append(A, RUN, events[i : i + size])
                    i += size
                batch = await log.read(A, RUN, after=after, wait_s=0)
                assert batch is not None
                assert list(batch.events) == events[after:]
                if batch.events:
                    assert batch.first_seq == after + 1

        asyncio.run(scenario())

    run()


async def test_events_of_every_kind_survive_the_trip_through_redis() -> None:
    from domain.conversation.interrupts import Interrupt

    interrupt = Interrupt(
        id="int_1",
        tenant_id=A,
        thread_id=ThreadId("th"),
        run_id=RUN,
        tool_call_id="c1",
        tool_name="create_task",
        arguments='{"title": "x"}',
        reason="tool_approval",
        message="Approve?",
        expires_at_ms=1,
    )
    events = [
        START,
        TextMessageStarted(message_id=MessageId("m")),
        delta(0),
        TextMessageEnded(message_id=MessageId("m")),
        ToolCallStarted(call_id="c1", name="kb_search", parent_message_id=MessageId("m")),
        ToolCallArgs("c1", '{"q"'),
        ToolCallEnded(call_id="c1"),
        ToolCallResult(message_id=MessageId("t"), call_id="c1", content="[]"),
        StepStarted(name="step 1"),
        StepFinished(name="step 1"),
        StateSnapshot(snapshot={"sba": {"step": 0, "toolCalls": []}, "n": 1.5}),
        StateDelta(operations=({"op": "replace", "path": "/sba/step", "value": 1},)),
        RunFinished(
            thread_id=ThreadId("th"),
            run_id=RUN,
            usage=Usage(input_tokens=3, output_tokens=4),
            pending_tool_call_ids=("c9",),
            interrupts=(interrupt,),
        ),
    ]
    async with open_log("redis-other-instance") as log:
        await log.open(A, RUN)
        await log.append(A, RUN, events)
        batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None and batch.complete
    assert list(batch.events) == events
    failed = [RunFailed(code="x", message="y")]
    assert decode_events(encode_events(failed)) == failed


async def test_one_flush_writes_one_stream_entry_per_run_and_marks_the_last() -> None:
    async with redis_store() as store:
        log = RedisRunEventLog(store)
        runs = [RunId(f"run-{i}") for i in range(3)]
        for run in runs:
            await log.open(A, run)
            await log.append(A, run, [RunStarted(thread_id=ThreadId("th"), run_id=run)])
            for i in range(20):
                await log.append(A, run, [delta(i)])
        await log.append(A, runs[0], [END])
        await log.flushed()
        for run in runs:
            entries = await store.client.xrange(store.key(f"r:{A}:{run}", "log"))
            assert len(entries) == 1
            entry_id, fields = entries[0]
            ended = run == runs[0]
            assert entry_id == (b"0-22" if ended else b"0-21")
            assert fields[b"s"] == b"1"
            assert (b"t" in fields) == ended
        other = RedisRunEventLog(store)
        batch = await other.read(A, runs[0], after=0, wait_s=0)
        assert batch is not None and batch.complete and batch.last_seq == 22


class RecordingStore(RedisStore):
    """Lists the commands each pipeline sends (to the real Redis underneath)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent: list[tuple[Any, ...]] = []

    async def pipeline(self, commands, scripts=()):
        self.sent.extend(commands)
        return await super().pipeline(commands, scripts)


async def test_entries_between_a_runs_first_and_last_are_plain_xadds() -> None:
    async with redis_store() as plain:
        store = RecordingStore(plain.client, prefix=plain.prefix)
        log = RedisRunEventLog(store, max_events=2)
        await log.open(A, RUN)
        await log.append(A, RUN, [START])
        await log.flushed()
        for i in range(3):
            await log.append(A, RUN, [delta(i)])
            await log.flushed()
        await log.append(A, RUN, [END])
        await log.flushed()
        assert [c[0] for c in store.sent] == ["EVALSHA", "XADD", "XADD", "XADD", "EVALSHA"]
        stream = store.key(f"r:{A}:{RUN}", "log")
        # The middle entries trimmed the older ones as the script does; the end set the expiry.
        assert [e[0] for e in await plain.client.xrange(stream)] == [b"0-4", b"0-5"]
        assert 0 < await plain.client.pttl(stream) <= 60_000
        batch = await RedisRunEventLog(plain).read(A, RUN, after=0, wait_s=0)
        assert batch is not None and batch.complete
        assert (batch.first_seq, list(batch.events)) == (4, [delta(2), END])


class FlakyStore(RedisStore):
    """Fails the writes it is told to, as a Redis that went away for a moment."""

    fail_next = False

    async def pipeline(self, commands, scripts=()):
        if self.fail_next:
            self.fail_next = False
            raise ServiceUnavailable("redis is unreachable (event log write): ConnectionError")
        return await super().pipeline(commands, scripts)


async def test_events_lost_while_redis_was_away_show_as_a_gap_where_a_read_begins() -> None:
    async with redis_store() as store:
        flaky = FlakyStore(store.client, prefix=store.prefix)
        writer, reader = RedisRunEventLog(flaky), RedisRunEventLog(store)
        stream = store.key(f"r:{A}:{RUN}", "log")

        async def flush(*events, fail: bool = False) -> None:
            flaky.fail_next = fail
            await writer.append(A, RUN, list(events))
            await writer.flushed()

        await writer.open(A, RUN)
        await flush(START, fail=True)
        await flush(delta(0))
        # The run's first entry was lost: the next one set the expiry of a run still open.
        assert await store.client.pttl(stream) > 3_600_000
        await flush(delta(1), delta(2), fail=True)
        await flush(delta(3), END)
        assert writer.dropped == 3
        assert 0 < await store.client.pttl(stream) <= 60_000
        head = await reader.read(A, RUN, after=0, wait_s=0)
        assert head is not None
        assert (head.first_seq, list(head.events), head.complete) == (2, [delta(0)], False)
        rest = await reader.read(A, RUN, after=head.last_seq, wait_s=0)
        assert rest is not None
        assert (rest.first_seq, list(rest.events), rest.complete) == (5, [delta(3), END], True)


async def test_a_restarted_redis_gets_the_write_script_again(tmp_path) -> None:
    with own_redis(tmp_path) as server:
        async with redis_store(server.url) as store:
            writer, reader = RedisRunEventLog(store), RedisRunEventLog(store)
            await writer.open(A, RUN)
            await writer.append(A, RUN, [START, delta(0)])
            await writer.flushed()
            server.stop()
            server.start()  # empty: no streams, no scripts
            await writer.append(A, RUN, [delta(1), END])
            await writer.flushed()
            assert writer.dropped == 0
            batch = await reader.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events), batch.complete) == (3, [delta(1), END], True)


LOST = RunFailed(code="instance_lost", message="gone")


async def test_a_lost_run_is_ended_after_its_last_logged_event(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0)])
    await log.append(A, RUN, [delta(1)])
    assert await log.end_lost(A, RUN, LOST) is True
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events), batch.complete) == (
        1,
        [START, delta(0), delta(1), LOST],
        True,
    )
    resumed = await log.read(A, RUN, after=3, wait_s=0)
    assert resumed is not None and (resumed.first_seq, list(resumed.events)) == (4, [LOST])


async def test_a_run_that_ended_is_not_ended_again_as_lost(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, END])
    assert await log.end_lost(A, RUN, LOST) is False
    assert await log.end_lost(A, RUN, LOST) is False
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None and list(batch.events) == [START, END]


async def test_only_the_runs_tenant_and_a_known_run_can_be_ended_as_lost(make_log) -> None:
    log = await make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    assert await log.end_lost(B, RUN, LOST) is False
    assert await log.end_lost(A, RunId("ghost"), LOST) is False
    assert await log.read(B, RUN, after=0, wait_s=0) is None
    assert await log.read(A, RunId("ghost"), after=0, wait_s=0) is None
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None and (list(batch.events), batch.complete) == ([START], False)


async def test_a_reader_past_a_lost_runs_last_written_event_gets_the_end_next() -> None:
    """The dead instance had sent its clients events it never wrote to Redis: a client resuming
    after them gets the end that another instance wrote after the last event written."""
    async with open_log("redis-other-instance") as log:
        await log.open(A, RUN)
        await log.append(A, RUN, [START, delta(0)])
        assert await log.end_lost(A, RUN, LOST) is True  # the end is seq 3
        batch = await log.reader.read(A, RUN, after=5, wait_s=0)
        assert batch is not None
        assert (batch.first_seq, list(batch.events), batch.complete) == (6, [LOST], True)
        # A normal end is not sent again to a reader that has it.
        await log.open(A, RunId("run-2"))
        await log.append(A, RunId("run-2"), [START, END])
        await log.settle()
        done = await log.reader.read(A, RunId("run-2"), after=2, wait_s=0)
        assert done is not None and (list(done.events), done.complete) == ([], True)


async def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(caplog) -> None:
    async with redis_store() as store:
        flaky = FlakyStore(store.client, prefix=store.prefix)
        writer = RedisRunEventLog(flaky)
        await writer.open(A, RUN)
        caplog.set_level("WARNING", logger="sba.redis")
        for i, fail in enumerate([True, True, True, False, True, False]):
            flaky.fail_next = fail
            await writer.append(A, RUN, [START] if i == 0 else [delta(i)])
            await writer.flushed()
        said = [r.getMessage() for r in caplog.records if r.name == "sba.redis"]
        assert [m.split(";")[0].split(":")[0] for m in said] == [
            "run events are not reaching redis",
            "run events reach redis again",
            "run events are not reaching redis",
            "run events reach redis again",
        ]
        assert "3 were not written" in said[1] and "1 were not written" in said[3]


async def test_a_flush_of_more_runs_than_one_pipeline_holds_writes_every_run_in_order() -> None:
    async with redis_store() as store:
        writer, reader = RedisRunEventLog(store), RedisRunEventLog(store)
        runs = [RunId(f"run-{i}") for i in range(600)]  # more than one pipeline's share
        for run in runs:
            await writer.open(A, run)
            await writer.append(A, run, [START, delta(0)])
        for run in runs[::7]:
            await writer.append(A, run, [delta(1)])
        await writer.flushed()
        for i, run in enumerate(runs):
            batch = await reader.read(A, run, after=0, wait_s=0)
            assert batch is not None
            expected = [START, delta(0)] + ([delta(1)] if i % 7 == 0 else [])
            assert list(batch.events) == expected, run


async def test_written_events_leave_the_writing_process_once_read_and_are_still_read() -> None:
    async with redis_store() as store:
        log = RedisRunEventLog(store)
        await log.open(A, RUN)
        await log.append(A, RUN, [START, delta(0), delta(1)])
        await log.flushed()
        # Written, but not read yet: a reader that is slower than the flush reads from memory.
        assert log._local.held(A, RUN) == (1, 3)
        first = await log.read(A, RUN, after=0, wait_s=0)
        assert first is not None and first.first_seq == 1 and len(first.events) == 3
        # The reader moved past them: they are in Redis, and go from here.
        nothing = await log.read(A, RUN, after=3, wait_s=0)
        assert nothing is not None and list(nothing.events) == []
        assert log._local.held(A, RUN) == (4, 3)
        await log.append(A, RUN, [delta(2)])
        # Not written yet: kept, and served from memory.
        tail = await log.read(A, RUN, after=3, wait_s=0)
        assert tail is not None and list(tail.events) == [delta(2)]
        await log.flushed()
        # A client resuming from the start on this instance reads what was let go from Redis.
        whole = await log.read(A, RUN, after=0, wait_s=0)
        assert whole is not None
        assert (whole.first_seq, list(whole.events)) == (1, [START, delta(0), delta(1), delta(2)])
        # A reader at the tail still waits in memory and is woken by the next append.
        waiting = asyncio.create_task(log.read(A, RUN, after=4, wait_s=5))
        await log.append(A, RUN, [END])
        woken = await asyncio.wait_for(waiting, 5)
        assert (list(woken.events), woken.complete) == ([END], True)
        await log.flushed()


async def test_a_finished_run_keeps_no_events_in_the_process_once_read_and_written() -> None:
    async with redis_store() as store:
        log = RedisRunEventLog(store)
        quick, slow = RunId("quick"), RunId("slow")
        for run in (quick, slow):
            await log.open(A, run)
            await log.append(A, run, [START, delta(0), END])
        # Read whole before the flush (the usual case: the reader is woken at once) ...
        first = await log.read(A, quick, after=0, wait_s=0)
        assert first is not None and first.complete and len(first.events) == 3
        assert log._local.held(A, quick) == (1, 3)  # not in Redis yet: kept
        await log.flushed()
        assert log._local.held(A, quick) == (4, 3)  # written, and had: gone
        # ... or after it: the reader reads no more, so the events go as they are handed out.
        assert log._local.held(A, slow) == (1, 3)
        later = await log.read(A, slow, after=0, wait_s=0)
        assert later is not None and later.complete and len(later.events) == 3
        assert log._local.held(A, slow) == (4, 3)
        # A client resuming either run reads it from Redis; one at the end is told so here.
        again = await log.read(A, quick, after=1, wait_s=0)
        assert again is not None and (again.first_seq, list(again.events)) == (2, [delta(0), END])
        done = await log.read(A, slow, after=3, wait_s=0)
        assert done is not None and done.complete and list(done.events) == []


async def test_a_run_ended_as_lost_by_its_own_instance_reaches_redis_too() -> None:
    async with redis_store() as store:
        writer, elsewhere = RedisRunEventLog(store), RedisRunEventLog(store)
        await writer.open(A, RUN)
        await writer.append(A, RUN, [START, delta(0)])
        assert await writer.end_lost(A, RUN, LOST) is True
        await writer.flushed()
        batch = await elsewhere.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (list(batch.events), batch.complete) == ([START, delta(0), LOST], True)


async def test_waiting_readers_share_their_timeout_timers() -> None:
    loop = asyncio.get_running_loop()
    log = MemoryRunEventLog()
    runs = [RunId(f"run-{i}") for i in range(100)]
    for run in runs:
        await log.open(A, run)
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    readers = [asyncio.create_task(log.read(A, run, after=0, wait_s=30)) for run in runs]
    await asyncio.sleep(0)  # one loop turn: each new reader task runs to its wait
    assert sum(len(log._runs[(A, run)].waiters) for run in runs) == len(runs)
    # A hundred waiting readers, one or two loop timers (one per tick their deadlines fall in).
    assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]
    for run in runs:
        await log.append(A, run, [START])
    batches = await asyncio.gather(*readers)
    assert all(list(b.events) == [START] for b in batches)
    # The appends woke them: no run is still due to be woken by a timer.
    assert all(log._runs[(A, run)].due is None for run in runs)


async def test_a_reader_whose_wait_is_up_is_woken_by_the_shared_timer() -> None:
    log = MemoryRunEventLog()
    await log.open(A, RUN)
    batch = await asyncio.wait_for(log.read(A, RUN, after=0, wait_s=0.01), 5)
    assert batch is not None and (list(batch.events), batch.complete) == ([], False)
    assert log._runs[(A, RUN)].due is None and not log._runs[(A, RUN)].waiters


async def test_a_short_wait_is_kept_when_another_reader_of_the_run_waits_longer() -> None:
    log = MemoryRunEventLog()
    await log.open(A, RUN)
    long_wait = asyncio.create_task(log.read(A, RUN, after=0, wait_s=3600))
    short = await asyncio.wait_for(log.read(A, RUN, after=0, wait_s=0.01), 5)
    assert short is not None and (list(short.events), short.complete) == ([], False)
    # The run's readers are woken together: the longer wait ends early, with nothing new.
    early = await asyncio.wait_for(long_wait, 5)
    assert early is not None and (list(early.events), early.complete) == ([], False)
