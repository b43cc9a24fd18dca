"""Adapters under contract: each suite runs against every adapter of its port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.persistence import MemoryUnitOfWork
from adapters.sqla.uow import SqlaUnitOfWork
from application.ports import UnitOfWork
from tests.db import sql_database
from tests.pg import pg_template  # noqa: F401 - fixture

UOW_KINDS = ["memory", "sqlite", "postgres", "postgres-pooler"]


async def open_uow(kind: str, request, tmp_path) -> AsyncIterator[UnitOfWork]:
    if kind == "memory":
        yield MemoryUnitOfWork()
        return
    async with sql_database(kind, request, tmp_path) as db:
        yield SqlaUnitOfWork(db)


@pytest.fixture(params=UOW_KINDS)
async def uow(request, tmp_path) -> AsyncIterator[UnitOfWork]:
    async for u in open_uow(request.param, request, tmp_path):
        yield u
