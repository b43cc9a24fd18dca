"""RunEventLog contract, run against every adapter (the Redis Streams log joins it later)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.event_log import MemoryRunEventLog
from application.conversation.ports import RunEventLog
from domain.conversation.events import RunFinished, RunStarted, TextDelta
from domain.conversation.model import Usage
from domain.ids import MessageId, RunId, TenantId, ThreadId

A, B = TenantId("ten_a"), TenantId("ten_b")
RUN = RunId("run-1")
START = RunStarted(thread_id=ThreadId("th"), run_id=RUN)
END = RunFinished(thread_id=ThreadId("th"), run_id=RUN, usage=Usage())


def delta(i: int) -> TextDelta:
    return TextDelta(MessageId("m"), f"tok{i}")


FACTORIES: dict[str, Callable[..., RunEventLog]] = {
    "memory": lambda **kw: MemoryRunEventLog(**kw),
}


@pytest.fixture(params=sorted(FACTORIES))
def make_log(request) -> Callable[..., RunEventLog]:
    return FACTORIES[request.param]


async def test_sequence_numbers_start_at_one_and_have_no_gaps(make_log) -> None:
    log = make_log()
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
    log = make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0), delta(1), delta(2)])
    batch = await log.read(A, RUN, after=2, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events)) == (3, [delta(1), delta(2)])


async def test_another_tenant_cannot_read_the_run(make_log) -> None:
    log = make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    assert await log.read(B, RUN, after=0, wait_s=0) is None


async def test_two_tenants_may_use_the_same_run_id_without_mixing(make_log) -> None:
    log = make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0)])
    await log.open(B, RUN)
    await log.append(B, RUN, [START, delta(7)])
    a, b = await log.read(A, RUN, after=0, wait_s=0), await log.read(B, RUN, after=0, wait_s=0)
    assert a is not None and list(a.events) == [START, delta(0)]
    assert b is not None and list(b.events) == [START, delta(7)]


async def test_unknown_run_reads_as_none(make_log) -> None:
    assert await make_log().read(A, RunId("nope"), after=0, wait_s=0) is None


async def test_a_waiting_reader_is_woken_by_an_append(make_log) -> None:
    log = make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    reader = asyncio.create_task(log.read(A, RUN, after=1, wait_s=30))
    await asyncio.sleep(0)  # let the reader start waiting: ordering, not timing
    assert not reader.done()
    await log.append(A, RUN, [delta(0)])
    batch = await asyncio.wait_for(reader, 5)
    assert batch is not None and list(batch.events) == [delta(0)]


async def test_a_waiting_reader_times_out_with_an_empty_open_batch(make_log) -> None:
    log = make_log()
    await log.open(A, RUN)
    await log.append(A, RUN, [START])
    batch = await log.read(A, RUN, after=1, wait_s=0.01)
    assert batch is not None
    assert (list(batch.events), batch.complete) == ([], False)


async def test_the_terminal_event_completes_the_log_and_later_appends_fail(make_log) -> None:
    log = make_log()
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
    log = make_log(max_events_per_run=3)
    await log.open(A, RUN)
    await log.append(A, RUN, [START, delta(0), delta(1), delta(2), delta(3)])
    batch = await log.read(A, RUN, after=0, wait_s=0)
    assert batch is not None
    assert (batch.first_seq, list(batch.events)) == (3, [delta(1), delta(2), delta(3)])


async def test_finished_runs_beyond_the_retention_count_are_forgotten(make_log) -> None:
    log = make_log(max_finished_runs=2)
    for i in range(3):
        run = RunId(f"r{i}")
        await log.open(A, run)
        await log.append(A, run, [RunStarted(thread_id=ThreadId("th"), run_id=run), END])
    assert await log.read(A, RunId("r0"), after=0, wait_s=0) is None
    assert await log.read(A, RunId("r2"), after=0, wait_s=0) is not None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=20), st.integers(0, 40))
def test_any_append_pattern_reads_back_in_order_from_any_point(sizes, after) -> None:
    async def scenario() -> None:
        for factory in FACTORIES.values():
            log = factory()
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
