"""The usage ledger over the in-memory unit of work's runs, those of deleted threads included
(the test double)."""

from __future__ import annotations

from collections.abc import Iterator

from adapters.memory.persistence import MemoryUnitOfWork
from application.quota.ports import DailyUsage
from domain.conversation.model import Run
from domain.ids import TenantId
from domain.quota.budget import DAY_MS, utc_day


class MemoryUsageLedger:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    def _runs(
        self, tenant_id: TenantId, since_ms: int, until_ms: int | None = None
    ) -> Iterator[Run]:
        end = until_ms if until_ms is not None else 2**62
        store = self._uow._store
        for runs in (store.runs, store.deleted_runs):
            for (t, _), run in runs.items():
                if t == tenant_id and since_ms <= run.created_at_ms < end:
                    yield run

    async def tokens_since(self, tenant_id: TenantId, since_ms: int) -> int:
        return sum(r.usage.total_tokens for r in self._runs(tenant_id, since_ms))

    async def daily(self, tenant_id: TenantId, since_ms: int, until_ms: int) -> list[DailyUsage]:
        days: dict[tuple[int, str], list[int]] = {}
        for r in self._runs(tenant_id, since_ms, until_ms):
            d = days.setdefault((r.created_at_ms // DAY_MS, r.model), [0, 0, 0])
            d[0] += 1
            d[1] += r.usage.input_tokens
            d[2] += r.usage.output_tokens
        return [
            DailyUsage(day=utc_day(n), model=m, runs=v[0], input_tokens=v[1], output_tokens=v[2])
            for (n, m), v in sorted(days.items())
        ]
