"""The usage ledger on SQL: sums over the tenant's runs (each carries the usage it ended with,
written once by the run journal), in the tenant's scope."""

from __future__ import annotations

from sqlalchemy import func, select

from adapters.scope import TenantScope
from adapters.sqla.scope import Database
from adapters.sqla.tables import runs
from application.quota.ports import DailyUsage
from domain.ids import TenantId
from domain.quota.budget import DAY_MS, utc_day


class SqlaUsageLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def tokens_since(self, tenant_id: TenantId, since_ms: int) -> int:
        c = runs.c
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            total = (
                await conn.execute(
                    select(func.coalesce(func.sum(c.input_tokens + c.output_tokens), 0)).where(
                        c.tenant_id == tenant_id, c.created_at_ms >= since_ms
                    )
                )
            ).scalar_one()
        return int(total)

    async def daily(self, tenant_id: TenantId, since_ms: int, until_ms: int) -> list[DailyUsage]:
        c = runs.c
        day = (c.created_at_ms / DAY_MS).label("day")
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            rows = (
                await conn.execute(
                    select(
                        day,
                        c.model,
                        func.count(),
                        func.sum(c.input_tokens),
                        func.sum(c.output_tokens),
                    )
                    .where(
                        c.tenant_id == tenant_id,
                        c.created_at_ms >= since_ms,
                        c.created_at_ms < until_ms,
                    )
                    .group_by(day, c.model)
                    .order_by(day, c.model)
                )
            ).all()
        return [
            DailyUsage(
                day=utc_day(int(d)),
                model=m or "",
                runs=int(n),
                input_tokens=int(i or 0),
                output_tokens=int(o or 0),
            )
            for d, m, n, i, o in rows
        ]
