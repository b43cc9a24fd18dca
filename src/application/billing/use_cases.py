"""Metering: each finished run's tokens are reported to the billing provider as one meter event,
by a job, so a provider outage delays billing instead of failing runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from application.billing.ports import MeterEvent, MeterReporter
from application.conversation.ports import RunJournal
from application.jobs.ports import JobQueue
from application.ports import Clock, UnitOfWork
from domain.conversation.model import Message, Run
from domain.ids import RunId, TenantId
from domain.jobs.model import Job
from domain.tools.model import ToolInvocation

METER_JOB = "usage.report"


def meter_job(tenant_id: TenantId, run_id: str) -> Job:
    return Job(kind=METER_JOB, tenant_id=tenant_id, key=f"meter:{run_id}", args={"run_id": run_id})


class BillingCustomers:
    """Which billing customer a tenant is, from settings keyed by tenant slug. The slugs are
    resolved to tenant ids when first needed (not at start-up, before the database may be
    migrated) and again, at most once per ``refresh_ms``, when an unknown tenant is asked for
    (a tenant created after start)."""

    def __init__(
        self,
        uow: UnitOfWork,
        by_slug: Mapping[str, str],
        clock: Clock,
        *,
        refresh_ms: int = 60_000,
    ) -> None:
        self._uow = uow
        self._by_slug = dict(by_slug)
        self._clock = clock
        self._refresh_ms = refresh_ms
        self._by_id: dict[TenantId, str] = {}
        self._loaded_at: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._by_slug)

    async def customer(self, tenant_id: TenantId) -> str | None:
        if not self._by_slug:
            return None
        found = self._by_id.get(tenant_id)
        now = self._clock.now_ms()
        if found is None and (self._loaded_at is None or now - self._loaded_at >= self._refresh_ms):
            async with self._uow.admin_transaction("system:billing", "billing.customers") as tx:
                tenants = await tx.tenants.list()
            self._by_id = {t.id: self._by_slug[t.slug] for t in tenants if t.slug in self._by_slug}
            self._loaded_at = now
            found = self._by_id.get(tenant_id)
        return found


class MeteredRunJournal:
    """A ``RunJournal`` that queues the usage report of every run it records the end of, for
    tenants that have a billing customer. The report is queued after the end is committed."""

    def __init__(self, inner: RunJournal, queue: JobQueue, customers: BillingCustomers) -> None:
        self._inner = inner
        self._queue = queue
        self._customers = customers

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        await self._inner.record_start(run, messages)

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        await self._inner.record_end(run, replies, tool_calls)
        if await self._customers.customer(run.tenant_id) is not None:
            await self._queue.enqueue(meter_job(run.tenant_id, run.id))


class ReportRunUsage:
    """The ``usage.report`` job: reads the run's recorded usage (its first ending) and reports
    it under an identifier fixed by the run, so a redelivered job is the same event."""

    def __init__(
        self,
        uow: UnitOfWork,
        reporter: MeterReporter,
        customers: BillingCustomers,
        *,
        identifier_prefix: str = "sba-run",
    ) -> None:
        self._uow = uow
        self._reporter = reporter
        self._customers = customers
        self._prefix = identifier_prefix

    async def __call__(self, job: Job) -> None:
        customer = await self._customers.customer(job.tenant_id)
        if customer is None:
            return
        async with self._uow.transaction(job.tenant_id) as tx:
            run = await tx.runs.get(job.tenant_id, RunId(job.args["run_id"]))
        if run is None or not run.status.is_terminal:
            return
        await self._reporter.report(
            MeterEvent(
                identifier=f"{self._prefix}-{run.tenant_id}-{run.id}",
                customer=customer,
                value=run.usage.total_tokens,
                timestamp_s=(run.finished_at_ms or run.created_at_ms) // 1000,
            )
        )
