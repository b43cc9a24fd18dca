"""The run journal on Postgres: asyncpg directly, group commit per tenant.

Run starts and ends are the hot path's only writes. Through SQLAlchemy each record cost a
transaction of its own and about fifteen statements, each a round trip with the ORM-free Core's
compile and the greenlet bridge around it, and every audit entry took the tenant's head row lock
for the length of its transaction, so one tenant's runs queued on it.

Here records are queued per tenant, and one flush writes everything a tenant queued while the
previous flush ran: a handful of set-based statements whatever the number of records (arrays
through ``unnest``) in that tenant's row-level-security context, and the audit entries of all of
them chained in memory and written with one insert. The statements live in the schema as
``sba_journal_flush`` (migration 0016), so a flush is one function call. When the journal knows
the tenant's audit head (its own last flush left it), that call is the whole flush in one round
trip and one implicit transaction: the function checks that every record applied and that the
head has not moved before it writes the entries and moves the head, and rolls everything back
otherwise. Then, and for a tenant's first flush, the careful way follows: an explicit
transaction in which the call reports what applied and locks the head, and the entries of what
applied are chained from it; four round trips. The head row is held only from the end of the
writes to the commit, never for the life of a run. A tenant has at most one flush in flight per
instance; other tenants flush beside it on the journal's other connections. A record submitted
while its tenant has none in flight is written at once by the task that submitted it; those
arriving meanwhile go together in the drain that follows.

A batch that Postgres refuses (a run id taken by another instance in the meantime, a value the
database cannot store) is retried record by record, each in a transaction of its own, so a record
that cannot be applied fails alone. A connection lost mid-flush is retried once on a fresh
connection: every record is idempotent (a start whose run exists is a conflict, an end whose run
ended is a no-op), so a flush whose commit did land is not applied twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from adapters.postgres.pool import LazyPool, is_connection_error
from adapters.sqla.audit import entry_row
from adapters.sqla.repositories import encode_tool_calls
from adapters.sqla.sqlite_journal import settle
from application.errors import (
    ApplicationError,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    TenantScopeViolation,
)
from domain.audit.events import run_finished, run_started, tool_called
from domain.audit.model import GENESIS, AuditEvent, AuditHead, chain
from domain.conversation.model import Message, Run
from domain.ids import TenantId
from domain.tools.model import ToolInvocation

log = logging.getLogger("sba.journal")

MAX_BATCH = 256

# The flush itself is a function in the schema (migration 0016): it drops to the application
# role, sets the transaction's tenant and writes the records (see the migration for what
# applies). Given the audit head the journal expects and the entries chained from it, it is the
# whole flush in one round trip; given none, it works inside the caller's transaction and
# returns which records applied and the tenant's head, locked.
_FLUSH = "SELECT * FROM sba_journal_flush(" + ", ".join(f"${i}" for i in range(1, 35)) + ")"
_KNOWN = "SELECT id FROM runs WHERE tenant_id = $1 AND id = ANY($2::text[])"
_AUDIT = """
WITH entries AS (
    INSERT INTO audit_entries (tenant_id, seq, at_ms, actor, action, subject, details,
                               prev_hash, hash)
    SELECT $1, e.* FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                               $7::text[], $8::text[], $9::text[])
    AS e(seq, at_ms, actor, action, subject, details, prev_hash, hash)
)
UPDATE audit_heads SET seq = $10, hash = $11 WHERE tenant_id = $1
"""
# The one-round-trip flush found a record that did not apply as expected, or the audit head
# moved since the journal saw it: nothing of it was written, the careful flush follows.
_SURPRISED = {"SBJ01", "SBJ02"}
# Audit heads remembered, one per tenant written lately; a tenant not among them takes the
# careful way once.
HEADS_KEPT = 4096

# SQLSTATEs that are the record's fault, not the database's.
_RLS = "42501"
_BAD_VALUE = {"22021", "22P05", "22001", "22P02", "22003"}
_CONFLICT = {"23505", "23503"}


@dataclass(slots=True)
class _Start:
    run: Run
    messages: Sequence[Message]
    future: asyncio.Future[None]
    error: ApplicationError | None = field(default=None)
    skip: bool = False  # never set on a start; read alike on every record


@dataclass(slots=True)
class _End:
    run: Run
    replies: Sequence[Message]
    tool_calls: Sequence[ToolInvocation]
    future: asyncio.Future[None]
    error: ApplicationError | None = field(default=None)
    # An ending that does not stand (the run ended already): it succeeds, nothing of it written.
    skip: bool = False


_Record = _Start | _End


def _translate(exc: BaseException) -> ApplicationError:
    """A refusal as an application error, naming no SQL, parameter or driver text."""
    state = getattr(exc, "sqlstate", None)
    if state in _CONFLICT:
        return Conflict("the change conflicts with stored data")
    if state == _RLS:
        return TenantScopeViolation("the database refused a row outside the transaction's tenant")
    if state in _BAD_VALUE:
        return InvalidInput("a value cannot be stored (too long, or a character such as NUL)")
    return ServiceUnavailable("the database is unavailable")


def _message_rows(run: Run, messages: Sequence[Message]) -> list[tuple[Any, ...]]:
    return [
        (
            run.id,
            run.thread_id,
            m.id,
            m.role.value,
            m.content,
            m.created_at_ms,
            encode_tool_calls(m.tool_calls),
            m.tool_call_id,
        )
        for m in messages
    ]


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


class PostgresRunJournal:
    """``dsn`` is a plain ``postgresql://`` URL. Tenant work drops to ``app_role`` (None: the
    login role, which must then be unprivileged), exactly as ``adapters.sqla.scope`` does.
    ``pooler``: no prepared statement outlives its statement (a transaction-mode pooler)."""

    def __init__(
        self,
        dsn: str,
        *,
        app_role: str | None = None,
        pooler: bool = False,
        connections: int = 4,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._app_role = app_role
        self._pool = LazyPool(
            dsn, size=connections, pooler=pooler, connect_timeout_s=connect_timeout_s
        )
        self._queued: dict[TenantId, list[_Record]] = {}
        self._flushing: set[TenantId] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heads: dict[TenantId, AuditHead] = {}

    # -- the port ----------------------------------------------------------------------------

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        await self._submit(_Start(run, messages, asyncio.get_running_loop().create_future()))

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        await self._submit(
            _End(run, replies, tool_calls, asyncio.get_running_loop().create_future())
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pool.close()

    # -- queueing ----------------------------------------------------------------------------

    async def _submit(self, record: _Record) -> None:
        tenant = record.run.tenant_id
        if tenant in self._flushing:
            self._queued.setdefault(tenant, []).append(record)
            await record.future
            return
        # Nothing of the tenant's is being written: the record goes now, from the task that
        # submits it (no task to start, no waiter to wake: under load each is a turn of the
        # event loop), and what arrives meanwhile waits for the drain that follows.
        self._flushing.add(tenant)
        try:
            await self._write_batch(tenant, [record])
        finally:
            self._hand_over(tenant)
            if record.future.done() and not record.future.cancelled():
                record.future.exception()  # taken here; raised by the await below
        await record.future

    async def _drain(self, tenant: TenantId) -> None:
        """Flushes the tenant's queue until it is empty; what arrives during a flush waits for
        the next one and goes with everything else that arrived meanwhile."""
        try:
            while batch := self._take(tenant):
                await self._write_batch(tenant, batch)
        finally:
            self._hand_over(tenant)

    def _hand_over(self, tenant: TenantId) -> None:
        """The tenant's writing ends, or goes on in a drain for what was queued meanwhile."""
        self._flushing.discard(tenant)
        if self._queued.get(tenant):
            self._flushing.add(tenant)
            task = asyncio.get_running_loop().create_task(self._drain(tenant))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write_batch(self, tenant: TenantId, batch: list[_Record]) -> None:
        try:
            await self._flush(tenant, batch)
        except BaseException as exc:
            error = _translate(exc)
            for record in batch:
                record.error = record.error or error
            if not isinstance(exc, Exception):
                raise
        finally:
            settle(batch)

    def _take(self, tenant: TenantId) -> list[_Record]:
        queued = self._queued.get(tenant)
        if not queued:
            self._queued.pop(tenant, None)
            return []
        batch, rest = queued[:MAX_BATCH], queued[MAX_BATCH:]
        if rest:
            self._queued[tenant] = rest
        else:
            del self._queued[tenant]
        return batch

    # -- writing -----------------------------------------------------------------------------

    async def _flush(self, tenant: TenantId, batch: list[_Record]) -> None:
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    await self._write_isolating(conn, tenant, batch)
                return
            except Exception as exc:
                if attempt == 2 or not is_connection_error(exc):
                    raise
                log.warning("run journal connection lost; retrying the flush once", exc_info=exc)
                for record in batch:
                    record.error = None

    async def _write_isolating(
        self, conn: asyncpg.Connection, tenant: TenantId, batch: list[_Record]
    ) -> None:
        try:
            await self._write(conn, tenant, batch)
        except asyncpg.PostgresError as exc:
            if is_connection_error(exc):
                raise
            if len(batch) == 1:
                batch[0].error = _translate(exc)
                if batch[0].error.code == "service_unavailable":
                    log.error("run journal write failed", exc_info=exc)
                return
            # Find the record Postgres refused: each alone, in its own transaction.
            for record in batch:
                record.error = None
                await self._write_isolating(conn, tenant, [record])

    async def _write(
        self, conn: asyncpg.Connection, tenant: TenantId, batch: list[_Record]
    ) -> None:
        for record in batch:
            record.error, record.skip = None, False
        starts: list[_Start] = []
        ends: dict[str, _End] = {}  # the first ending of a run in the batch
        messages: list[tuple[Any, ...]] = []
        for record in batch:
            if isinstance(record, _Start):
                if any(record.run.id == other.run.id for other in starts):
                    record.error = Conflict(f"run {record.run.id} already exists")
                    continue
                starts.append(record)
                messages.extend(_message_rows(record.run, record.messages))
            elif record.run.id in ends:
                record.skip = True  # a later ending of the same run does not stand
            else:
                ends[record.run.id] = record
                messages.extend(_message_rows(record.run, record.replies))
        ending = [r.run for r in ends.values()]
        writes = (
            tenant,
            self._app_role,
            [r.id for r in ending],
            [r.status.value for r in ending],
            [r.usage.input_tokens for r in ending],
            [r.usage.output_tokens for r in ending],
            [r.error_code for r in ending],
            [r.error_message for r in ending],
            [r.finished_at_ms for r in ending],
            [r.model for r in ending],
            [r.run.id for r in starts],
            [r.run.thread_id for r in starts],
            [r.run.agent for r in starts],
            [r.run.status.value for r in starts],
            [r.run.created_at_ms for r in starts],
            *_columns(messages, 8),
            GENESIS,
        )
        head = self._heads.get(tenant)
        if head is not None and (starts or ends):
            # Every record is expected to apply: their entries are chained from the head the
            # journal left, and the function checks both before it writes them.
            entries, moved = _chained(tenant, head, _events(batch))
            try:
                await conn.execute(_FLUSH, *writes, head.seq, head.hash, *_columns(entries, 8))
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) not in _SURPRISED:
                    raise
            else:
                self._remember(tenant, moved)
                return
            self._heads.pop(tenant, None)
        async with conn.transaction():
            rows = await conn.fetch(_FLUSH, *writes, None, None, *([[]] * 8))
            ended = {row[1] for row in rows if row[0] == "e"}
            started = {row[1] for row in rows if row[0] == "s"}
            seq, hash_ = next((row[2], row[3]) for row in rows if row[0] == "h")
            for start in starts:
                if start.run.id not in started:
                    start.error = Conflict(f"run {start.run.id} already exists")
            missing = [run_id for run_id in ends if run_id not in ended]
            if missing:
                known = {row[0] for row in await conn.fetch(_KNOWN, tenant, missing)}
                for run_id in missing:
                    if run_id in known:
                        ends[run_id].skip = True  # it ended already: the first ending stands
                    else:
                        ends[run_id].error = NotFound(f"run {run_id} was never recorded")
            moved = AuditHead(int(seq), hash_)
            events = _events(batch)
            if events:
                entries, moved = _chained(tenant, moved, events)
                await conn.execute(_AUDIT, tenant, *_columns(entries, 8), moved.seq, moved.hash)
        self._remember(tenant, moved)

    def _remember(self, tenant: TenantId, head: AuditHead) -> None:
        """The tenant's head as the journal's last commit left it, most recent last."""
        self._heads.pop(tenant, None)
        self._heads[tenant] = head
        if len(self._heads) > HEADS_KEPT:
            del self._heads[next(iter(self._heads))]


def _events(batch: list[_Record]) -> list[tuple[AuditEvent, int]]:
    """The audit events of the records that applied (those neither refused nor skipped)."""
    events: list[tuple[AuditEvent, int]] = []
    for record in batch:
        if record.error is not None or record.skip:
            continue
        run = record.run
        if isinstance(record, _Start):
            events.append((run_started(run, len(record.messages)), run.created_at_ms))
        else:
            events.extend((tool_called(run, c), c.at_ms) for c in record.tool_calls)
            events.append((run_finished(run), run.finished_at_ms or run.created_at_ms))
    return events


def _chained(
    tenant: TenantId, head: AuditHead, events: list[tuple[AuditEvent, int]]
) -> tuple[list[tuple[Any, ...]], AuditHead]:
    """The entries' rows (the tenant left out: it goes once) chained after ``head`` (sequence 0:
    the tenant has no entry yet), and the head they leave."""
    last: AuditHead | None = None if head.seq == 0 else head
    rows: list[tuple[Any, ...]] = []
    for event, at_ms in events:
        entry = chain(tenant, last, at_ms, event)
        rows.append(entry_row(entry, event)[1:])
        last = AuditHead(entry.seq, entry.hash)
    return rows, last or head
