"""SQL databases for the contract suites: SQLite in a temporary folder, or a fresh copy of the
migrated Postgres template. On Postgres tenant work drops to the unprivileged application role,
so row-level security is in force under every suite; the admin path stays the superuser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg

from adapters.sqla.migrator import AlembicSchemaMigrator
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.scope import Database
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from domain.ids import TenantId
from domain.tenancy.model import Tenant
from tests.pg import drop_database, fresh_database


def plain_dsn(db: Database) -> str:
    """The database's URL as asyncpg takes it (the adapters that skip SQLAlchemy)."""
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def who_may_execute(db: Database, function: str) -> tuple[bool, bool]:
    """Whether the application role, and whether PUBLIC, may execute ``function``."""
    conn = await asyncpg.connect(plain_dsn(db))
    try:
        signature = await conn.fetchval(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = $1", function
        )
        allowed = "SELECT has_function_privilege($1, $2, 'EXECUTE')"
        return (
            await conn.fetchval(allowed, DEFAULT_APP_ROLE, signature),
            await conn.fetchval(allowed, "public", signature),
        )
    finally:
        await conn.close()


@asynccontextmanager
async def sql_database(
    kind: str, request, tmp_path, *, tenants: Iterable[TenantId] = (), pool_size: int = 5
) -> AsyncIterator[Database]:
    pg_name = None
    if kind.startswith("postgres"):
        url, pg_name = await fresh_database(request.getfixturevalue("pg_template"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
        await AlembicSchemaMigrator(url).upgrade()
    # "postgres-pooler": the settings for a transaction-mode pooler (no prepared statement
    # outlives its statement); the contract must hold the same with them.
    engine = create_engine_for(
        url, pool_size=pool_size, max_overflow=0, pooler=kind == "postgres-pooler"
    )
    db = Database(engine, app_role=DEFAULT_APP_ROLE)
    try:
        async with SqlaUnitOfWork(db).admin_transaction("test", "seed") as tx:
            for tid in tenants:
                await tx.tenants.add(
                    Tenant(id=tid, slug=tid.replace("_", "-"), name=tid, created_at_ms=0)
                )
            await tx.commit()
        yield db
    finally:
        await engine.dispose()
        if pg_name:
            await drop_database(pg_name)
