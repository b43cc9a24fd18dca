"""Alembic, configured in code: the migrations ship inside this package."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.tables import metadata
from adapters.sqla.uow import ensure_sqlite_directory
from application.errors import ServiceUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite+pysqlite", "postgresql+asyncpg": "postgresql+psycopg"}


def sync_url(url: str) -> str:
    """Migrations run synchronously in a worker thread; the async driver's sync sibling is
    used when it is installed, else the async URL is driven through ``run_sync``."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver == "sqlite+pysqlite":
        return parsed.set(drivername=driver).render_as_string(hide_password=False)
    return url


def alembic_config(url: str, app_role: str = DEFAULT_APP_ROLE) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["database_url"] = url
    cfg.attributes["app_role"] = app_role
    return cfg


# Search structures specific to one database, made by migrations and not modelled: SQLite's FTS5
# table (with its shadow tables), Postgres's tsvector columns and GIN index on kb_chunks.
_PG_SEARCH_COLUMNS = frozenset({"title", "language", "tsv"})


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if name is None:
        return True
    if type_ == "table":
        return not (name == "alembic_version" or name.startswith("kb_chunks_fts"))
    if type_ == "column" and reflected and compare_to is None:
        return not (obj.table.name == "kb_chunks" and name in _PG_SEARCH_COLUMNS)
    if type_ == "index" and reflected:
        return name != "ix_kb_chunks_tsv"
    return True


def _describe(diff: Any) -> str:
    if isinstance(diff, tuple):
        kind = diff[0]
        target = diff[1]
        label = getattr(target, "name", None) or str(target)
        return f"{kind}: {label}"
    return f"changed: {diff}"


class AlembicSchemaMigrator:
    """Migrates with the admin URL (the schema owner); on Postgres the migrations grant the
    application role ``app_role`` its privileges and protect every tenant table."""

    def __init__(self, url: str, *, app_role: str = DEFAULT_APP_ROLE) -> None:
        self._url = url
        self._app_role = app_role or DEFAULT_APP_ROLE

    async def upgrade(self, revision: str = "head") -> None:
        await self._run(command.upgrade, revision)

    async def downgrade(self, revision: str = "base") -> None:
        await self._run(command.downgrade, revision)

    async def current(self) -> str | None:
        """The revision the database is at; None for an empty database."""
        engine = create_async_engine(self._url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"cannot read the schema revision: {exc}") from exc
        finally:
            await engine.dispose()

    async def check(self) -> list[str]:
        def compare(conn: Connection) -> list[str]:
            context = MigrationContext.configure(
                conn, opts={"include_object": _ours, "compare_type": True}
            )
            return [_describe(d) for d in compare_metadata(context, metadata)]

        engine = create_async_engine(self._url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(compare)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"cannot read the schema: {exc}") from exc
        finally:
            await engine.dispose()

    async def _run(self, fn: object, revision: str) -> None:
        ensure_sqlite_directory(self._url)
        cfg = alembic_config(self._url, self._app_role)
        try:
            await asyncio.to_thread(fn, cfg, revision)  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"migration failed: {exc}") from exc
