"""The usage ledger on SQL: sums over the tenant's runs (each carries the usage it ended with,
written once by the run journal) and over the usage kept of runs whose thread was deleted, in
the tenant's scope."""

from __future__ import annotations

from sqlalchemy import Subquery, func, literal, select, union_all

from adapters.scope import TenantScope
from adapters.sqla.scope import Database
from adapters.sqla.tables import deleted_run_usage, runs
from application.quota.ports import DailyUsage
from domain.ids import TenantId
from domain.quota.budget import DAY_MS, utc_day


def _spent(tenant_id: TenantId, since_ms: int, until_ms: int | None = None) -> Subquery:
    """Every run's usage, live or of a deleted thread, as one relation."""
    parts = []
    for table in (runs, deleted_run_usage):
        c = table.c
        query = select(
            c.created_at_ms,
            c.model,
            c.input_tokens,
            c.output_tokens,
            literal(1).label("runs"),
        ).where(c.tenant_id == tenant_id, c.created_at_ms >= since_ms)
        if until_ms is not None:
            query = query.where(c.created_at_ms < until_ms)
        parts.append(query)
    return union_all(*parts).subquery()


class SqlaUsageLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def tokens_since(self, tenant_id: TenantId, since_ms: int) -> int:
        spent = _spent(tenant_id, since_ms)
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            total = (
                await conn.execute(
                    select(func.coalesce(func.sum(spent.c.input_tokens + spent.c.output_tokens), 0))
                )
            ).scalar_one()
        return int(total)

    async def daily(self, tenant_id: TenantId, since_ms: int, until_ms: int) -> list[DailyUsage]:
        spent = _spent(tenant_id, since_ms, until_ms)
        c = spent.c
        day = (c.created_at_ms / DAY_MS).label("day")
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            rows = (
                await conn.execute(
                    select(
                        day,
                        c.model,
                        func.sum(c.runs),
                        func.sum(c.input_tokens),
                        func.sum(c.output_tokens),
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
