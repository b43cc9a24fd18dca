"""The asyncpg connections of the Postgres hot paths that skip SQLAlchemy (the run journal, the
knowledge search): a pool made on first use, and what its errors mean.

Every setting these paths make is transaction-local (the role, the tenant), and they leave no
session state behind, so a connection goes back to the pool without a reset round trip."""

from __future__ import annotations

import asyncio

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    return None


class LazyPool:
    """``dsn`` is a plain ``postgresql://`` URL. ``pooler``: no prepared statement outlives its
    statement (a transaction-mode pooler such as Supabase's)."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 4,
        pooler: bool = False,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._size = size
        self._pooler = pooler
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._size,
                        timeout=self._connect_timeout_s,
                        statement_cache_size=0 if self._pooler else 128,
                        reset=_keep_session,
                    )
        return self._pool

    @property
    def made(self) -> asyncpg.Pool | None:
        """The pool, if it has been made."""
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
