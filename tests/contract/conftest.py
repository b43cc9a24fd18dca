"""Adapters under contract: each suite runs against every adapter of its port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.persistence import MemoryUnitOfWork
from adapters.sqla.migrator import AlembicSchemaMigrator
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from application.ports import UnitOfWork

UOW_KINDS = ["memory", "sqlite"]


async def open_uow(kind: str, tmp_path) -> AsyncIterator[UnitOfWork]:
    if kind == "memory":
        yield MemoryUnitOfWork()
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
    async for u in open_uow(request.param, tmp_path):
        yield u
