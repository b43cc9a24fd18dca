"""The run event log on Redis Streams, for runs that clients follow across instances.

The instance executing a run keeps the run's events in its in-process log too: its own
readers (nearly all of them) are served from memory at once, and the events reach Redis in
the background, many runs' events per pipeline (write-behind). A reader on another instance
(a client that reconnected elsewhere with ``Last-Event-ID``) reads the stream: entry ids are
``0-<seq>``, so resuming after a sequence number is a range read, and waiting for more is a
blocking ``XREAD``. Streams are trimmed to exactly ``max_events`` entries and expire ``retention_s``
after the run ends (``max_open_s`` if it never does: its instance died).

If Redis cannot be reached, runs go on and their own instance's readers see every event;
events written meanwhile are missing from the stream (a reader elsewhere sees the gap in the
sequence numbers), and the adapter counts them."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, get_args

import msgspec

from adapters.memory.event_log import MemoryRunEventLog
from adapters.redis.client import RedisStore
from application.conversation.ports import EventBatch
from application.errors import ServiceUnavailable
from domain.conversation.events import RunEvent, is_terminal
from domain.ids import RunId, TenantId

log = logging.getLogger("sba.redis")

# Entries name their event type, so a reordering of the union never misreads a stream.
_TYPES: tuple[type[Any], ...] = get_args(RunEvent)
_CODE = {t: t.__name__.encode() for t in _TYPES}
_DECODERS = {t.__name__.encode(): msgspec.msgpack.Decoder(t) for t in _TYPES}
_encode = msgspec.msgpack.Encoder().encode


def encode_event(event: RunEvent) -> dict[bytes, bytes]:
    return {b"k": _CODE[type(event)], b"e": _encode(event)}


def decode_event(fields: dict[bytes, bytes]) -> RunEvent:
    event: RunEvent = _DECODERS[fields[b"k"]].decode(fields[b"e"])
    return event


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
        # Runs with events not yet in Redis, in the order they were appended.
        self._pending: dict[tuple[TenantId, RunId], list[tuple[int, RunEvent]]] = {}
        self._opened: set[tuple[TenantId, RunId]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._blocking = asyncio.Semaphore(max_blocking_reads)
        # Block no longer than the client's socket timeout allows.
        self._block_ms = 500
        self.dropped = 0

    def _keys(self, tenant_id: TenantId, run_id: RunId) -> tuple[str, str]:
        partition = f"r:{tenant_id}:{run_id}"
        return self._store.key(partition, "ev"), self._store.key(partition, "m")

    # -- writing (the executing instance) ---------------------------------------------------

    async def open(self, tenant_id: TenantId, run_id: RunId) -> None:
        await self._local.open(tenant_id, run_id)
        self._opened.add((tenant_id, run_id))
        self._pending.setdefault((tenant_id, run_id), [])
        self._schedule()

    async def append(self, tenant_id: TenantId, run_id: RunId, events: Sequence[RunEvent]) -> int:
        last = await self._local.append(tenant_id, run_id, events)
        queue = self._pending.setdefault((tenant_id, run_id), [])
        queue.extend(zip(range(last - len(events) + 1, last + 1), events, strict=True))
        self._schedule()
        return last

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            opened, self._opened = self._opened, set()
            try:
                await self._store.run(
                    "event log write", functools.partial(self._write, batch, opened)
                )
            except ServiceUnavailable as exc:
                lost = sum(len(v) for v in batch.values())
                self.dropped += lost
                log.warning("%d run events not written to redis: %s", lost, exc.message)

    async def _write(
        self,
        batch: dict[tuple[TenantId, RunId], list[tuple[int, RunEvent]]],
        opened: set[tuple[TenantId, RunId]],
    ) -> None:
        async with self._store.client.pipeline(transaction=False) as pipe:
            for (tenant_id, run_id), items in batch.items():
                stream, meta = self._keys(tenant_id, run_id)
                if (tenant_id, run_id) in opened:
                    pipe.hset(meta, b"open", b"1")
                    pipe.pexpire(meta, self._max_open_ms)
                for seq, event in items:
                    pipe.xadd(
                        stream,
                        encode_event(event),
                        id=f"0-{seq}",
                        maxlen=self._max_events,
                        approximate=False,
                    )
                if not items:
                    continue
                last_seq, last = items[-1]
                if is_terminal(last):
                    pipe.hset(meta, b"done", str(last_seq).encode())
                    pipe.pexpire(meta, self._retention_ms)
                    pipe.pexpire(stream, self._retention_ms)
                elif (tenant_id, run_id) in opened:
                    pipe.pexpire(stream, self._max_open_ms)
            await pipe.execute(raise_on_error=True)

    async def flushed(self) -> None:
        """Waits until every event appended so far has been written (or counted as lost)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    # -- reading (any instance) ---------------------------------------------------------------

    async def read(
        self, tenant_id: TenantId, run_id: RunId, *, after: int, wait_s: float
    ) -> EventBatch | None:
        if self._local.holds(tenant_id, run_id):
            return await self._local.read(tenant_id, run_id, after=after, wait_s=wait_s)
        return await self._store.run(
            "event log read", lambda: self._read_remote(tenant_id, run_id, after, wait_s)
        )

    async def _read_remote(
        self, tenant_id: TenantId, run_id: RunId, after: int, wait_s: float
    ) -> EventBatch | None:
        stream, meta = self._keys(tenant_id, run_id)
        client = self._store.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.hget(meta, b"done")
            pipe.exists(meta)
            pipe.xrange(stream, min=f"0-{after + 1}", count=self._max_events)
            done_raw, exists, entries = await pipe.execute()
        if not exists and not entries:
            return None
        done = int(done_raw) if done_raw is not None else None
        if not entries and done is None and wait_s > 0:
            entries = await self._wait(stream, after, wait_s)
            if not entries:
                done_raw = await client.hget(meta, b"done")
                done = int(done_raw) if done_raw is not None else None
        if not entries:
            return EventBatch(first_seq=after + 1, events=(), complete=done is not None)
        events = [decode_event(fields) for _, fields in entries]
        first = _seq(entries[0][0])
        complete = is_terminal(events[-1]) or (done is not None and first + len(events) - 1 >= done)
        return EventBatch(first_seq=first, events=events, complete=complete)

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
