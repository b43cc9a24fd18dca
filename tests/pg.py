"""Real Postgres for the contract suites: one migrated template database per session, and a
fresh copy of it per test (CREATE DATABASE … TEMPLATE is fast)."""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from adapters.sqla.migrator import AlembicSchemaMigrator
from tests.support import unavailable

ADMIN_DSN = os.environ.get("SBA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _url(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"Postgres at {ADMIN_DSN} is not reachable: {exc}")
        raise


def _run(make_coro) -> None:
    """Runs a coroutine to completion on its own loop in a thread: session fixtures may be
    first requested from inside a running test loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(make_coro())).result()


@pytest.fixture(scope="session")
def pg_template() -> str:
    name = f"sba_tmpl_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        await create_database(name)
        await AlembicSchemaMigrator(_url(ADMIN_DSN, name)).upgrade()

    _run(create)
    yield name

    async def drop() -> None:
        conn = await _admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run(drop)


async def create_database(name: str) -> str:
    """A new, empty database: its SQLAlchemy URL (for ``sba db upgrade`` to migrate)."""
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _url(ADMIN_DSN, name)


async def fresh_database(template: str) -> tuple[str, str]:
    """A new database copied from the migrated template: (its SQLAlchemy URL, its name)."""
    name = f"sba_t_{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return _url(ADMIN_DSN, name), name


async def drop_database(name: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
