"""Adapters under contract: each suite runs against every adapter of its port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.persistence import MemoryUnitOfWork
from adapters.sqla.migrator import AlembicSchemaMigrator
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from application.ports import UnitOfWork
from tests.pg import drop_database, fresh_database, pg_template  # noqa: F401 - fixture

UOW_KINDS = ["memory", "sqlite", "postgres"]


async def open_uow(kind: str, tmp_path, template: str | None = None) -> AsyncIterator[UnitOfWork]:
    if kind == "memory":
        yield MemoryUnitOfWork()
        return
    if kind == "postgres":
        assert template is not None
        url, name = await fresh_database(template)
        engine = create_engine_for(url)
        try:
            yield SqlaUnitOfWork(engine)
        finally:
            await engine.dispose()
            await drop_database(name)
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
    await AlembicSchemaMigrator(url).upgrade()
    engine = create_engine_for(url)
    try:
        yield SqlaUnitOfWork(engine)
    finally:
        await engine.dispose()


@pytest.fixture(params=UOW_KINDS)
async def uow(request, tmp_path) -> AsyncIterator[UnitOfWork]:
    template = request.getfixturevalue("pg_template") if request.param == "postgres" else None
    async for u in open_uow(request.param, tmp_path, template):
        yield u
