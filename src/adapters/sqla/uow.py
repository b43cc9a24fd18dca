"""Unit of work over an async SQLAlchemy engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.sqla.repositories import (
    SqlaApiKeyRepository,
    SqlaRunRepository,
    SqlaTenantRepository,
    SqlaThreadRepository,
)
from application.errors import Conflict, ServiceUnavailable
from domain.ids import TenantId


class SqlaTransaction:
    __slots__ = ("_conn", "api_keys", "runs", "tenants", "threads")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.threads = SqlaThreadRepository(conn)
        self.runs = SqlaRunRepository(conn)
        self.tenants = SqlaTenantRepository(conn)
        self.api_keys = SqlaApiKeyRepository(conn)

    async def commit(self) -> None:
        await self._conn.commit()


class SqlaUnitOfWork:
    """Each transaction takes a pooled connection for its own duration only. Driver errors never
    cross the port: a duplicate key becomes ``Conflict``, anything else ``ServiceUnavailable``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self, tenant_id: TenantId | None) -> AsyncIterator[SqlaTransaction]:
        try:
            async with self._engine.connect() as conn:
                await self._begin(conn, tenant_id)
                yield SqlaTransaction(conn)
                if conn.in_transaction():
                    await conn.rollback()
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable(f"the database is unavailable: {exc}") from exc

    async def _begin(self, conn: AsyncConnection, tenant_id: TenantId | None) -> None:
        """Starts the transaction. The Postgres adapter extends this to set the row-level
        security context (transaction-local) before any statement runs."""
        await conn.begin()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the writer; NORMAL sync is durable across process crashes.
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "busy_timeout=5000",
        "foreign_keys=ON",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def ensure_sqlite_directory(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine_for(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        ensure_sqlite_directory(url)
        # One connection: SQLite has one writer anyway, and units of work are short, so
        # queueing in the pool beats fighting over the file lock.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=30)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)
