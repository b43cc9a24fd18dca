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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["database_url"] = url
    return cfg


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Alembic's own table and SQLite's FTS5 index (a virtual table and its shadow tables) are
    # not part of the models.
    return not (
        type_ == "table"
        and name is not None
        and (name == "alembic_version" or name.startswith("kb_chunks_fts"))
    )


def _describe(diff: Any) -> str:
    if isinstance(diff, tuple):
        kind = diff[0]
        target = diff[1]
        label = getattr(target, "name", None) or str(target)
        return f"{kind}: {label}"
    return f"changed: {diff}"


class AlembicSchemaMigrator:
    def __init__(self, url: str) -> None:
        self._url = url

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
        cfg = alembic_config(self._url)
        try:
            await asyncio.to_thread(fn, cfg, revision)  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"migration failed: {exc}") from exc
