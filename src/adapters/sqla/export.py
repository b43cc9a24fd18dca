"""A tenant's data as rows, table by table (for the export that precedes a tenant's deletion).
Every tenant-owned table is read, so nothing the tenant owns is left out; binary columns are
base64 text."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select

from adapters.scope import TenantScope
from adapters.sqla.scope import Database
from adapters.sqla.tables import TENANT_TABLES, metadata, tenants
from domain.ids import TenantId


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


class SqlaTenantExport:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def rows(self, tenant_id: TenantId) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            for row in await conn.execute(select(tenants).where(tenants.c.id == tenant_id)):
                yield "tenants", {k: _plain(v) for k, v in row._mapping.items()}
            for name in TENANT_TABLES:
                table = metadata.tables[name]
                result = await conn.stream(
                    select(table)
                    .where(table.c.tenant_id == tenant_id)
                    .order_by(*table.primary_key.columns)
                )
                async for row in result:
                    yield name, {k: _plain(v) for k, v in row._mapping.items()}
