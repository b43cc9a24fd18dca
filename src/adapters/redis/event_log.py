"""The run event log on Redis Streams, for runs that clients follow across instances.

The instance executing a run keeps the run's events in its in-process log too: its own
readers (nearly all of them) are served from memory at once, and the events reach Redis in
the background (write-behind). Each flush writes one stream entry per run, holding every
event the run appended since the previous flush, a pipeline of up to 128 runs' entries.
Once written and read, the events leave the in-process log: a held stream costs the process
only the events its reader has not had yet, and a reader asking for older events (a client
resuming from the start) reads them from Redis.

An entry's id is ``0-<seq of its last event>``; its fields are ``s`` (the seq of its first
event), ``e`` (the events, msgpack) and, on the entry that ends the run, ``t`` (and ``l``
when another instance ended a run whose own instance died: ``end_lost``). Resuming
after sequence number N is a range read from ``0-(N+1)``: the first entry read may begin at
or before N, and those events are skipped. Waiting for more is a blocking ``XREAD`` from
``0-N``. A run becomes visible to other instances with its first entry.

Each write trims the entries that hold only events older than the run's newest
``max_events`` (``MINID``), and readers skip the older events of the oldest entry kept: a
reader sees at most the newest ``max_events`` events, as from the in-process log. Streams
expire ``retention_s`` after the run ends (``max_open_s`` if it never does: its instance
died); the first and the last entry of a run set that expiry in the script that adds them,
and the entries between are plain ``XADD`` commands.

If Redis cannot be reached, runs go on and their own instance's readers see every event;
events written meanwhile are missing from the stream (a reader elsewhere sees the gap in the
sequence numbers), and the adapter counts them."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any, get_args

import msgspec

from adapters.memory.event_log import MemoryRunEventLog
from adapters.redis.client import Lua, RedisStore
from application.conversation.ports import EventBatch
from application.errors import ServiceUnavailable
from domain.conversation.events import RunEvent, is_terminal
from domain.ids import RunId, TenantId

log = logging.getLogger("sba.redis")

# Events are stored with their type's name, so a reordering of the union never misreads one.
_TYPES: tuple[type[Any], ...] = get_args(RunEvent)
_CODE = {t: t.__name__ for t in _TYPES}
_DECODERS = {t.__name__: msgspec.msgpack.Decoder(t) for t in _TYPES}
_encode = msgspec.msgpack.Encoder().encode
_decode_tagged = msgspec.msgpack.Decoder(list[tuple[str, msgspec.Raw]]).decode


def encode_events(events: Sequence[RunEvent]) -> bytes:
    return _encode([(_CODE[type(e)], e) for e in events])


def decode_events(payload: bytes) -> list[RunEvent]:
    return [_DECODERS[code].decode(raw) for code, raw in _decode_tagged(payload)]


# KEYS[1]: the run's stream. ARGV: entry id, MINID, first seq, events, '1' if the entry ends
# the run ('' if not), expiry in ms ('' to leave it).
_ADD = Lua("""
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[1], 'MINID', '=', ARGV[2], ARGV[1], 's', ARGV[3], 'e', ARGV[4],
             't', '1')
else
  redis.call('XADD', KEYS[1], 'MINID', '=', ARGV[2], ARGV[1], 's', ARGV[3], 'e', ARGV[4])
end
if ARGV[6] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return 1
""")


# KEYS[1]: the run's stream. ARGV: the events (msgpack: the terminal one), expiry in ms.
# Ends a run whose writer is gone: the entry follows the newest one the stream holds, unless
# the stream is gone or holds the run's end, and is marked ``l`` (lost). Returns the seq of the
# end, or 0.
_END_LOST = Lua("""
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest == 0 then return 0 end
local fields = newest[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 't' then return 0 end
end
local seq = tonumber(string.match(newest[1][1], '%-(%d+)$')) + 1
redis.call('XADD', KEYS[1], '0-' .. seq, 's', seq, 'e', ARGV[1], 't', '1', 'l', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return seq
""")


# Runs written per pipeline; a run's events stay in order, its later ones in a later pipeline.
_FLUSH_RUNS = 128


def _seq(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[2])


class RedisRunEventLog:
    def __init__(
        self,
        store: RedisStore,
        *,
        max_events: int = 10_000,
        retention_s: float = 60.0,
        max_open_s: float = 86_400.0,
        max_finished_local: int = 4_096,
        max_blocking_reads: int = 64,
    ) -> None:
        self._store = store
        self._local = MemoryRunEventLog(
            max_events_per_run=max_events,
            retention_s=retention_s,
            max_finished_runs=max_finished_local,
        )
        self._max_events = max_events
        self._retention_ms = int(retention_s * 1000)
        self._max_open_ms = int(max_open_s * 1000)
        # Runs with events not yet in Redis: the seq of the first, then the events in order.
        self._pending: dict[tuple[TenantId, RunId], tuple[int, list[RunEvent]]] = {}
        # Runs whose first entry is still to be written (it sets the stream's expiry).
        self._opened: set[tuple[TenantId, RunId]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._blocking = asyncio.Semaphore(max_blocking_reads)
        # Block no longer than the client's socket timeout allows.
        self._block_ms = 500
        self.dropped = 0
        self._lost_in_outage = 0

    def _stream(self, tenant_id: TenantId, run_id: RunId) -> str:
        return self._store.key(f"r:{tenant_id}:{run_id}", "log")

    # -- writing (the executing instance) ---------------------------------------------------

    async def open(self, tenant_id: TenantId, run_id: RunId) -> None:
        await self._local.open(tenant_id, run_id)
        self._opened.add((tenant_id, run_id))

    async def append(self, tenant_id: TenantId, run_id: RunId, events: Sequence[RunEvent]) -> int:
        last = self._local.append_now(tenant_id, run_id, events)
        if events:
            self._queue((tenant_id, run_id), last, events)
        return last

    def _queue(self, run: tuple[TenantId, RunId], last: int, events: Sequence[RunEvent]) -> None:
        pending = self._pending.get(run)
        if pending is None:
            self._pending[run] = (last - len(events) + 1, list(events))
        else:
            pending[1].extend(events)
        self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            if len(self._pending) <= _FLUSH_RUNS:
                batch, self._pending = self._pending, {}
            else:
                # Thousands of live runs: a pipeline of a few hundred at a time, so that the
                # loop serves readers between them instead of encoding every run at once.
                taken = list(itertools.islice(self._pending, _FLUSH_RUNS))
                batch = {run: self._pending.pop(run) for run in taken}
            first = {run for run in batch if run in self._opened}
            self._opened -= first
            try:
                await self._write(batch, first)
            except ServiceUnavailable as exc:
                # The next entry of a run that goes on sets its expiry instead.
                self._opened |= {run for run in first if not is_terminal(batch[run][1][-1])}
                lost = sum(len(events) for _, events in batch.values())
                self.dropped += lost
                # One warning per outage, not one per flush; the count comes with the end.
                if self._lost_in_outage == 0:
                    log.warning("run events are not reaching redis: %s", exc.message)
                self._lost_in_outage += lost
            else:
                if self._lost_in_outage:
                    log.warning(
                        "run events reach redis again; %d were not written meanwhile",
                        self._lost_in_outage,
                    )
                    self._lost_in_outage = 0

    async def _write(
        self,
        batch: dict[tuple[TenantId, RunId], tuple[int, list[RunEvent]]],
        first: set[tuple[TenantId, RunId]],
    ) -> None:
        commands = []
        for run, (first_seq, events) in batch.items():
            last_seq = first_seq + len(events) - 1
            if len(events) > self._max_events:  # older ones would be trimmed at once
                first_seq, events = last_seq - self._max_events + 1, events[-self._max_events :]
            terminal = is_terminal(events[-1])
            if terminal:
                expiry: int | str = self._retention_ms
            elif run in first:
                expiry = self._max_open_ms
            else:
                expiry = ""
            entry_id = f"0-{last_seq}"
            min_id = f"0-{max(1, last_seq - self._max_events + 1)}"
            payload = encode_events(events)
            stream = self._stream(*run)
            if terminal or expiry != "":
                args = (entry_id, min_id, first_seq, payload, "1" if terminal else "", expiry)
                commands.append(_ADD.call([stream], args))
            else:
                # An entry in the middle of a run: the script's XADD alone, without the script
                # (Redis runs a plain command at a fraction of a script call's cost, and held
                # streams write one such entry per event).
                commands.append(
                    ("XADD", stream, "MINID", "=", min_id, entry_id, "s", first_seq, "e", payload)
                )
        await self._store.call("event log write", commands, (_ADD,))
        # Written: each of these events leaves this process once its reader is past it.
        for run, (first_seq, events) in batch.items():
            self._local.mark_written(*run, first_seq + len(events) - 1)

    async def end_lost(self, tenant_id: TenantId, run_id: RunId, event: RunEvent) -> bool:
        held = self._local.held(tenant_id, run_id)
        if held is not None:
            if not await self._local.end_lost(tenant_id, run_id, event):
                return False
            # Written to Redis like any other event (it follows the last one held): readers
            # elsewhere see the end too.
            self._queue((tenant_id, run_id), held[1] + 1, (event,))
            return True
        command = _END_LOST.call(
            [self._stream(tenant_id, run_id)], (encode_events([event]), self._retention_ms)
        )
        replies = await self._store.call("event log end", [command], (_END_LOST,))
        return bool(replies[0])

    async def flushed(self) -> None:
        """Waits until every event appended so far has been written (or counted as lost)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    # -- reading (any instance) ---------------------------------------------------------------

    def read(
        self, tenant_id: TenantId, run_id: RunId, *, after: int, wait_s: float
    ) -> Coroutine[Any, Any, EventBatch | None]:
        # Not a coroutine of its own: a held stream's reader waits in the in-process log's, and
        # a layer more (with the closure the Redis path needs) would be objects alive per held
        # stream, renewed with every event.
        held = self._local.held(tenant_id, run_id)
        if held is not None and after + 1 >= held[0]:
            # The reader had everything up to ``after``: what of it is in Redis goes from here.
            self._local.release(tenant_id, run_id, after)
            return self._local.read(tenant_id, run_id, after=after, wait_s=wait_s)
        # Not run here, or the reader wants events already written to Redis and let go of
        # (another reader of the run on this instance was further on).
        return self._store.run(
            "event log read",
            functools.partial(self._read_remote, tenant_id, run_id, after, wait_s),
        )

    async def _read_remote(
        self, tenant_id: TenantId, run_id: RunId, after: int, wait_s: float
    ) -> EventBatch | None:
        stream = self._stream(tenant_id, run_id)
        async with self._store.client.pipeline(transaction=False) as pipe:
            pipe.xrevrange(stream, count=1)
            pipe.xrange(stream, min=f"0-{after + 1}", count=self._max_events)
            newest, entries = await pipe.execute()
        if not newest:
            return None
        last_id, last_fields = newest[0]
        if not entries and b"t" not in last_fields and wait_s > 0:
            entries = await self._wait(stream, after, wait_s)
        if not entries:
            if b"l" in last_fields and _seq(last_id) <= after:
                # The reader is past the run's end: it saw events from an instance that died
                # before writing them here, and the run was ended after the last one written
                # (``end_lost``). The end is its next event.
                return EventBatch(
                    first_seq=after + 1, events=decode_events(last_fields[b"e"])[-1:], complete=True
                )
            return EventBatch(first_seq=after + 1, events=(), complete=b"t" in last_fields)
        newest_seq = max(_seq(last_id), _seq(entries[-1][0]))
        return self._batch(entries, after, newest_seq)

    def _batch(self, entries: list[Any], after: int, newest: int) -> EventBatch:
        """The events of ``entries`` after ``after`` and within the newest ``max_events``, up
        to the first gap (events lost while Redis was away): the next read begins with it."""
        start = max(after + 1, newest - self._max_events + 1)
        events: list[RunEvent] = []
        first_seq = next_seq = start
        complete = False
        for _, fields in entries:
            seq = int(fields[b"s"])
            decoded = decode_events(fields[b"e"])
            if seq < start:
                decoded, seq = decoded[start - seq :], start
            if not decoded:
                continue
            if not events:
                first_seq = next_seq = seq
            elif seq != next_seq:
                break
            events.extend(decoded)
            next_seq = seq + len(decoded)
            complete = b"t" in fields
        return EventBatch(first_seq=first_seq, events=events, complete=complete)

    async def _wait(self, stream: str, after: int, wait_s: float) -> list[Any]:
        deadline = time.monotonic() + wait_s
        try:
            async with asyncio.timeout(wait_s):
                await self._blocking.acquire()
        except TimeoutError:
            return []
        try:
            while (left := deadline - time.monotonic()) > 0:
                block = max(1, min(self._block_ms, int(left * 1000)))
                reply = await self._store.client.xread(
                    {stream: f"0-{after}"}, count=self._max_events, block=block
                )
                if reply:
                    entries: list[Any] = reply[0][1]
                    return entries
            return []
        finally:
            self._blocking.release()
