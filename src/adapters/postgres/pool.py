"""The asyncpg connections of the Postgres hot paths that skip SQLAlchemy (the run journal, the
knowledge search): a small pool of our own, connected on first use, and what its errors mean.

Every setting these paths make is transaction-local (the role, the tenant), and they leave no
session state behind, so a connection goes back to the pool as it is: no reset round trip, no
proxy object, no inactivity timer per use (asyncpg's own pool makes each of these per
acquire/release, which a run that writes twice paid for twice). A connection that comes back
after anything other than a statement Postgres refused (a cancellation, a lost socket) is closed
rather than reused: its protocol state is not known."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Any

import asyncpg


def is_connection_error(exc: BaseException) -> bool:
    """A lost connection (worth one retry on a fresh one), not a refused statement."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        # A connection the server closed while it sat in the pool is found out this way.
        | asyncpg.exceptions.InternalClientError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError,
    )


class _Lease:
    """``async with pool.acquire() as conn``: the connection, given back at the end."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: LazyPool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._pool._take()
        return self._conn

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            reusable = exc is None or (
                isinstance(exc, asyncpg.PostgresError) and not is_connection_error(exc)
            )
            self._pool._give_back(conn, reusable=reusable)


class LazyPool:
    """At most ``size`` connections to ``dsn`` (a plain ``postgresql://`` URL), each made when
    first needed. ``pooler``: no prepared statement outlives its statement (a transaction-mode
    pooler such as Supabase's)."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 4,
        pooler: bool = False,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self._dsn = dsn
        self._size = size
        self._pooler = pooler
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[asyncpg.Connection] = []
        self._open = 0  # connections open or being opened
        # Callers waiting for a connection: each is handed one, or None to try again.
        self._waiting: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closed = False

    @property
    def made(self) -> LazyPool | None:
        """The pool, once it has opened a connection."""
        return self if self._open else None

    def acquire(self) -> _Lease:
        return _Lease(self)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def _take(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn
                self._open -= 1
            if self._open < self._size:
                self._open += 1
                try:
                    return await asyncpg.connect(
                        self._dsn,
                        timeout=self._connect_timeout_s,
                        statement_cache_size=0 if self._pooler else 128,
                    )
                except BaseException:
                    self._open -= 1
                    self._wake_one(None)
                    raise
            waiter: asyncio.Future[asyncpg.Connection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._give_back(waiter.result(), reusable=True)  # handed as we gave up
                else:
                    self._remove(waiter)
                raise
            if handed is not None:
                return handed

    def _give_back(self, conn: asyncpg.Connection, *, reusable: bool) -> None:
        if not reusable or self._closed or conn.is_closed():
            self._open -= 1
            conn.terminate()
            self._wake_one(None)  # a waiter may open a connection in its place
            return
        if not self._wake_one(conn):
            self._idle.append(conn)

    def _wake_one(self, conn: asyncpg.Connection | None) -> bool:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _remove(self, waiter: asyncio.Future[asyncpg.Connection | None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiter)

    async def close(self) -> None:
        """Closes the idle connections; those in use close when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
