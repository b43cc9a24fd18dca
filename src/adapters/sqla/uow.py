"""Unit of work over an async SQLAlchemy engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.scope import AdminScope, KeyScope, Scope, TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.repositories import (
    SqlaAdminLog,
    SqlaApiKeyRepository,
    SqlaRunRepository,
    SqlaTenantRepository,
    SqlaThreadRepository,
)
from adapters.sqla.scope import Database
from domain.ids import TenantId


class SqlaTransaction:
    def __init__(self, conn: AsyncConnection, scope: Scope) -> None:
        self._conn = conn
        self.threads = SqlaThreadRepository(conn, scope)
        self.runs = SqlaRunRepository(conn, scope)
        self.tenants = SqlaTenantRepository(conn, scope)
        self.api_keys = SqlaApiKeyRepository(conn, scope)
        self.audit = SqlaAuditTrail(conn, scope, is_postgres=conn.dialect.name == "postgresql")

    async def commit(self) -> None:
        await self._conn.commit()


class SqlaAdminTransaction(SqlaTransaction):
    def __init__(self, conn: AsyncConnection, scope: AdminScope) -> None:
        super().__init__(conn, scope)
        self.admin_log = SqlaAdminLog(conn, scope)


class SqlaUnitOfWork:
    """Each transaction takes a pooled connection for its own duration only, in one scope (see
    ``adapters.sqla.scope``). Driver errors never cross the port: a duplicate key becomes
    ``Conflict``, a row-level-security refusal ``TenantScopeViolation``, anything else
    ``ServiceUnavailable``."""

    def __init__(self, db: Database | AsyncEngine) -> None:
        self._db = db if isinstance(db, Database) else Database(db)

    @property
    def database(self) -> Database:
        return self._db

    @asynccontextmanager
    async def _open(self, scope: TenantScope | KeyScope) -> AsyncIterator[SqlaTransaction]:
        async with self._db.connect(scope) as conn:
            yield SqlaTransaction(conn, scope)

    @asynccontextmanager
    async def _open_admin(self, scope: AdminScope) -> AsyncIterator[SqlaAdminTransaction]:
        async with self._db.connect(scope) as conn:
            yield SqlaAdminTransaction(conn, scope)

    def transaction(self, tenant_id: TenantId) -> AbstractAsyncContextManager[SqlaTransaction]:
        return self._open(TenantScope(tenant_id))

    def key_transaction(self, key_prefix: str) -> AbstractAsyncContextManager[SqlaTransaction]:
        return self._open(KeyScope(key_prefix))

    def admin_transaction(
        self, actor: str, action: str
    ) -> AbstractAsyncContextManager[SqlaAdminTransaction]:
        return self._open_admin(AdminScope(actor, action))

    async def ping(self) -> None:
        async with self._db.connect(KeyScope("")) as conn:
            await conn.execute(text("SELECT 1"))

    async def isolation_problems(self) -> list[str]:
        return await self._db.isolation_problems()


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


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def create_engine_for(
    url: str, *, pooler: bool = False, pool_size: int = 10, max_overflow: int = 10
) -> AsyncEngine:
    """An engine for ``url``. ``pooler`` is for a transaction-mode pooler in front of Postgres
    (Supabase's, PgBouncer): consecutive transactions may land on different server
    connections, so no prepared statement may outlive its statement: caches off and every
    statement uniquely named. The scope context is transaction-local already."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        ensure_sqlite_directory(url)
        # One connection: SQLite has one writer anyway, and units of work are short, so
        # queueing in the pool beats fighting over the file lock.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=30)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if pooler:
        connect_args = {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    # No ping before each checkout: Database retries a connection found dead on its first
    # statement instead (see ``adapters.sqla.scope``).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args=connect_args,
    )
