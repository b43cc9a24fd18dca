"""The embedded database's run journal: one writer thread, group commit.

Run starts and ends are the only writes on the hot path. Going through the async driver costs a
thread hop per statement; here each record is a handful of statements executed inside the
writer thread, and every record that arrived while the previous commit ran shares the next
one. A record that cannot be applied is rolled back to its own savepoint and fails alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from adapters.sqla.audit import append_sqlite
from adapters.sqla.repositories import encode_tool_calls
from application.errors import ApplicationError, Conflict, NotFound, ServiceUnavailable
from domain.audit.events import run_finished, run_started, tool_called
from domain.conversation.model import Message, Run
from domain.tools.model import ToolInvocation

log = logging.getLogger("sba.journal")

MAX_BATCH = 512

_INSERT_THREAD = "INSERT OR IGNORE INTO threads (tenant_id, id, created_at_ms) VALUES (?, ?, ?)"
_INSERT_RUN = (
    "INSERT INTO runs (tenant_id, id, thread_id, agent, status, input_tokens, output_tokens,"
    " error_code, error_message, created_at_ms, finished_at_ms, model)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_END_RUN = (
    "UPDATE runs SET status = ?, input_tokens = ?, output_tokens = ?, error_code = ?,"
    " error_message = ?, finished_at_ms = ?, model = ?"
    " WHERE tenant_id = ? AND id = ? AND status IN ('pending', 'running')"
)
_RUN_EXISTS = "SELECT 1 FROM runs WHERE tenant_id = ? AND id = ?"
_MAX_POSITION = "SELECT max(position) FROM messages WHERE tenant_id = ? AND thread_id = ?"
_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages (tenant_id, thread_id, id, position, role, content,"
    " created_at_ms, tool_calls, tool_call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _add_messages(cur: sqlite3.Cursor, run: Run, messages: Sequence[Message]) -> None:
    if not messages:
        return
    top = cur.execute(_MAX_POSITION, (run.tenant_id, run.thread_id)).fetchone()[0]
    position = 0 if top is None else top + 1
    for m in messages:
        # OR IGNORE skips ids the thread holds already (clients resend their history); the
        # position is consumed only by a row that was really inserted.
        cur.execute(
            _INSERT_MESSAGE,
            (
                run.tenant_id,
                run.thread_id,
                m.id,
                position,
                m.role.value,
                m.content,
                m.created_at_ms,
                encode_tool_calls(m.tool_calls),
                m.tool_call_id,
            ),
        )
        position += cur.rowcount


def _apply_start(cur: sqlite3.Cursor, run: Run, messages: Sequence[Message]) -> None:
    if cur.execute(_RUN_EXISTS, (run.tenant_id, run.id)).fetchone() is not None:
        raise Conflict(f"run {run.id} already exists")
    cur.execute(_INSERT_THREAD, (run.tenant_id, run.thread_id, run.created_at_ms))
    _add_messages(cur, run, messages)
    cur.execute(
        _INSERT_RUN,
        (
            run.tenant_id,
            run.id,
            run.thread_id,
            run.agent,
            run.status.value,
            run.usage.input_tokens,
            run.usage.output_tokens,
            run.error_code,
            run.error_message,
            run.created_at_ms,
            run.finished_at_ms,
            run.model,
        ),
    )
    append_sqlite(cur, run.tenant_id, run_started(run, len(messages)), run.created_at_ms)


def _apply_end(
    cur: sqlite3.Cursor,
    run: Run,
    replies: Sequence[Message],
    tool_calls: Sequence[ToolInvocation],
) -> None:
    cur.execute(
        _END_RUN,
        (
            run.status.value,
            run.usage.input_tokens,
            run.usage.output_tokens,
            run.error_code,
            run.error_message,
            run.finished_at_ms,
            run.model,
            run.tenant_id,
            run.id,
        ),
    )
    if cur.rowcount == 0:
        if cur.execute(_RUN_EXISTS, (run.tenant_id, run.id)).fetchone() is None:
            raise NotFound(f"run {run.id} was never recorded")
        return  # it ended already: the first ending stands
    _add_messages(cur, run, replies)
    for call in tool_calls:
        append_sqlite(cur, run.tenant_id, tool_called(run, call), call.at_ms)
    append_sqlite(cur, run.tenant_id, run_finished(run), run.finished_at_ms or run.created_at_ms)


@dataclass(slots=True)
class _Record:
    apply: Callable[[sqlite3.Cursor], None]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    error: ApplicationError | None = field(default=None)


class Settled(Protocol):
    future: asyncio.Future[None]
    error: ApplicationError | None


def settle(batch: Sequence[Settled]) -> None:
    """Completes each record's waiter with its outcome (one already cancelled is left)."""
    for record in batch:
        if record.future.done():
            continue
        if record.error is None:
            record.future.set_result(None)
        else:
            record.future.set_exception(record.error)


class SqliteRunJournal:
    """Commits never checkpoint the WAL themselves (that would stall every record in the batch
    for milliseconds): a second thread checkpoints it passively every ``checkpoint_s``."""

    def __init__(self, path: str, *, checkpoint_s: float = 1.0) -> None:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._queue: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sba-journal", daemon=True)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="sba-journal-checkpoint", daemon=True
        )
        self._checkpoint_s = checkpoint_s
        self._stopping = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        await self._submit(lambda cur: _apply_start(cur, run, messages))

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        await self._submit(lambda cur: _apply_end(cur, run, replies, tool_calls))

    async def _submit(self, apply: Callable[[sqlite3.Cursor], None]) -> None:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Record(apply, loop, future))
        await future

    def _ensure_started(self) -> None:
        if not self._started:
            with self._lock:
                if not self._started:
                    self._thread.start()
                    self._checkpointer.start()
                    self._started = True

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._stopping.set()
            self._thread.join(timeout=10)
            self._checkpointer.join(timeout=10)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=5000",
            "foreign_keys=ON",
            "wal_autocheckpoint=0",
        ):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _checkpoint_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stopping.wait(self._checkpoint_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, isolation_level=None)
                    conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed", exc_info=exc)
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                if conn is None:
                    conn = self._connect()
                self._commit(conn, batch)
            except sqlite3.Error as exc:
                log.error("journal commit failed", exc_info=exc)
                for record in batch:
                    record.error = ServiceUnavailable("the database is unavailable")
                if conn is not None:
                    conn.close()
                    conn = None
            self._resolve(batch)
            if stop:
                break
        if conn is not None:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Record]) -> None:
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for record in batch:
                cur.execute("SAVEPOINT record")
                try:
                    record.apply(cur)
                except ApplicationError as exc:
                    record.error = exc
                    cur.execute("ROLLBACK TO record")
                except sqlite3.IntegrityError as exc:
                    log.warning("a journal record conflicted with stored data: %s", exc)
                    record.error = Conflict("the change conflicts with stored data")
                    cur.execute("ROLLBACK TO record")
                cur.execute("RELEASE record")
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    @staticmethod
    def _resolve(batch: list[_Record]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Record]] = {}
        for record in batch:
            by_loop.setdefault(record.loop, []).append(record)
        for loop, records in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, records)
