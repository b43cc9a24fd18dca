"""In-process run event log: one bounded buffer per run, readers woken by futures."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence

from application.conversation.ports import EventBatch
from domain.conversation.events import RunEvent, is_terminal
from domain.ids import RunId, TenantId


class _RunBuffer:
    __slots__ = (
        "complete",
        "due",
        "events",
        "first_seq",
        "handed",
        "tenant_id",
        "waiters",
        "written",
    )

    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self.events: list[RunEvent] = []
        self.first_seq = 1
        self.complete = False
        self.waiters: list[asyncio.Future[None]] = []
        # The tick of ``_Timeouts`` this run's waiting readers are registered for.
        self.due: int | None = None
        # The last event kept elsewhere too (a shared log): what may go once it has been read.
        self.written = 0
        # The last event handed to a reader.
        self.handed = 0

    def wake(self) -> None:
        self.due = None
        waiters = self.waiters
        if waiters:
            # Emptied in place: a new list per wake-up would be an object more per event.
            # (Setting a result only schedules the waiter: nothing joins the list meanwhile.)
            for fut in waiters:
                _wake(fut)
            waiters.clear()

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    def drop_through(self, seq: int) -> None:
        """Lets the events up to ``seq`` go (kept elsewhere, and had by the readers)."""
        drop = min(seq, self.written, self.last_seq) - self.first_seq + 1
        if drop > 0:
            del self.events[:drop]
            self.first_seq += drop


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Timeouts:
    """Wakes a run's waiting readers when a wait is up, with one loop timer per ``tick`` of
    time for every run due in it rather than one timer per wait: a timer costs about half a
    KiB, and each held stream keeps a reader waiting. A run is registered for the earliest
    tick one of its readers is due at and woken whole then (a reader due later just returns
    early, with nothing new); an append, which wakes the run's readers anyway, cancels its
    registration. A reader is woken up to one tick late."""

    __slots__ = ("_due", "_tick")

    def __init__(self, tick_s: float = 0.25) -> None:
        self._tick = tick_s
        self._due: dict[int, list[_RunBuffer]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, buf: _RunBuffer, wait_s: float) -> None:
        tick = math.ceil((loop.time() + wait_s) / self._tick)
        if buf.due is not None and buf.due <= tick:
            return  # an earlier tick wakes this run's readers already
        buf.due = tick
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = []
            loop.call_at(tick * self._tick, self._fire, tick)
        due.append(buf)

    def _fire(self, tick: int) -> None:
        for buf in self._due.pop(tick, ()):
            if buf.due == tick:  # not woken by an append since, nor moved to an earlier tick
                buf.wake()


class MemoryRunEventLog:
    """Lives in one process: readers on another instance cannot see it (the Redis Streams log
    can). Keeps at most ``max_events_per_run`` events per run (older ones are dropped, so a
    reader resuming from before the window gets a batch whose ``first_seq`` shows the gap), and
    keeps finished runs for ``retention_s`` seconds, at most ``max_finished_runs`` of them."""

    def __init__(
        self,
        *,
        max_events_per_run: int = 10_000,
        retention_s: float = 60.0,
        max_finished_runs: int = 4_096,
    ) -> None:
        self._runs: dict[tuple[TenantId, RunId], _RunBuffer] = {}
        self._finished: OrderedDict[tuple[TenantId, RunId], float] = OrderedDict()
        self._max_events = max_events_per_run
        self._retention_s = retention_s
        self._max_finished = max_finished_runs
        self._timeouts = _Timeouts()

    async def open(self, tenant_id: TenantId, run_id: RunId) -> None:
        key = (tenant_id, run_id)
        if key not in self._runs:
            self._runs[key] = _RunBuffer(tenant_id)

    async def append(self, tenant_id: TenantId, run_id: RunId, events: Sequence[RunEvent]) -> int:
        return self.append_now(tenant_id, run_id, events)

    def append_now(self, tenant_id: TenantId, run_id: RunId, events: Sequence[RunEvent]) -> int:
        """``append`` without a coroutine of its own, for a log that wraps this one."""
        key = (tenant_id, run_id)
        buf = self._runs.get(key)
        if buf is None:
            raise KeyError(f"run {run_id} was never opened")
        if buf.complete:
            raise ValueError(f"run {run_id} has already ended")
        buf.events.extend(events)
        overflow = len(buf.events) - self._max_events
        if overflow > 0:
            del buf.events[:overflow]
            buf.first_seq += overflow
        if events and is_terminal(events[-1]):
            buf.complete = True
            self._retire(key)
        buf.wake()
        return buf.last_seq

    async def end_lost(self, tenant_id: TenantId, run_id: RunId, event: RunEvent) -> bool:
        buf = self._runs.get((tenant_id, run_id))
        if buf is None or buf.complete:
            return False
        await self.append(tenant_id, run_id, (event,))
        return True

    def held(self, tenant_id: TenantId, run_id: RunId) -> tuple[int, int] | None:
        """The seqs of the oldest event still held for the run (one past the last when none
        is) and of its last event; None when the run is not held here."""
        buf = self._runs.get((tenant_id, run_id))
        return None if buf is None else (buf.first_seq, buf.last_seq)

    def mark_written(self, tenant_id: TenantId, run_id: RunId, seq: int) -> None:
        """The run's events up to ``seq`` are kept elsewhere too (a shared log): each goes from
        here once it has been handed to a reader (at once, if it was already)."""
        buf = self._runs.get((tenant_id, run_id))
        if buf is not None and seq > buf.written:
            buf.written = seq
            # What a reader had already goes now: a run whose reader had its end reads no more,
            # and its events would otherwise stay here for the whole retention.
            buf.drop_through(buf.handed)

    def release(self, tenant_id: TenantId, run_id: RunId, read: int) -> None:
        """A reader has had the run's events up to ``read``: those also kept elsewhere go."""
        buf = self._runs.get((tenant_id, run_id))
        if buf is not None:
            buf.drop_through(read)

    async def read(
        self, tenant_id: TenantId, run_id: RunId, *, after: int, wait_s: float
    ) -> EventBatch | None:
        buf = self._runs.get((tenant_id, run_id))
        if buf is None:
            return None
        if after >= buf.last_seq and not buf.complete and wait_s > 0:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            buf.waiters.append(fut)
            self._timeouts.add(loop, buf, wait_s)
            try:
                await fut
            finally:
                if fut in buf.waiters:
                    buf.waiters.remove(fut)
        start = max(after + 1, buf.first_seq)
        events = buf.events[start - buf.first_seq :]
        if events:
            buf.handed = max(buf.handed, start + len(events) - 1)
            if buf.written:  # a shared log keeps them: those written go once handed out
                buf.drop_through(buf.handed)
        return EventBatch(first_seq=start, events=events, complete=buf.complete)

    def _retire(self, key: tuple[TenantId, RunId]) -> None:
        loop = asyncio.get_running_loop()
        self._finished[key] = loop.time() + self._retention_s
        # Expire by time and by count, oldest first, without a timer per run.
        now = loop.time()
        while self._finished:
            oldest, deadline = next(iter(self._finished.items()))
            if deadline > now and len(self._finished) <= self._max_finished:
                break
            del self._finished[oldest]
            self._runs.pop(oldest, None)

    def __len__(self) -> int:
        return len(self._runs)
