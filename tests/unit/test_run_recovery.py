"""Runs whose instance is gone, with in-memory adapters: a started run holds a lease from before
it is recorded until it ends; a lapsed lease is ended as ``instance_lost`` once, its log ended
for every follower; a run that did end keeps its outcome; a database that cannot be reached
leaves the lease to be claimed again."""

from __future__ import annotations

from adapters.llm.offline import OfflineChatModel
from adapters.memory.event_log import MemoryRunEventLog
from adapters.memory.interrupts import MemoryInterruptStore
from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.leases import MemoryRunLeases
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.rate_limiter import MemoryConcurrencyGuard
from adapters.memory.usage import MemoryUsageLedger
from application.conversation.recovery import LOST_CODE, RecoverLostRuns
from application.conversation.use_cases import StartRun
from application.errors import ServiceUnavailable
from application.quota.use_cases import BudgetGuard, RunSlots
from domain.conversation.events import RunFailed, RunFinished, RunStarted
from domain.conversation.model import RunStatus, Usage
from domain.ids import RunId
from domain.quota.policy import Plan, QuotaPolicy
from domain.tenancy.model import Tenant
from tests.unit.test_run_use_cases import (
    TENANT,
    FixedClock,
    RecordingLauncher,
    command,
    executor,
)


class World:
    def __init__(self) -> None:
        self.now = [0.0]
        self.uow = MemoryUnitOfWork()
        self.log = MemoryRunEventLog()
        self.leases = MemoryRunLeases(term_s=10, clock=lambda: self.now[0])
        self.launcher = RecordingLauncher()
        self.journal = TransactionalRunJournal(self.uow)
        policy = QuotaPolicy(default=Plan(name="default"))
        guard = BudgetGuard(MemoryUsageLedger(self.uow), policy, FixedClock(), ttl_ms=0)
        self.start = StartRun(
            self.journal,
            self.log,
            self.launcher,
            FixedClock(),
            MemoryInterruptStore(),
            self.uow,
            RunSlots(MemoryConcurrencyGuard(), policy, lease_s=30),
            guard,
            leases=self.leases,
        )
        self.tenant = Tenant(id=TENANT, slug="demo", name="demo", created_at_ms=0)
        self.recovery = RecoverLostRuns(self.leases, self.uow, self.journal, self.log, FixedClock())

    async def seed(self) -> None:
        async with self.uow.admin_transaction("test", "seed") as tx:
            await tx.tenants.add(self.tenant)
            await tx.commit()

    def lapse(self) -> None:
        self.now[0] += 11

    async def run(self, run_id: str = "r1"):
        async with self.uow.transaction(TENANT) as tx:
            return await tx.runs.get(TENANT, RunId(run_id))

    async def events(self, run_id: str = "r1"):
        batch = await self.log.read(TENANT, RunId(run_id), after=0, wait_s=0)
        assert batch is not None
        return list(batch.events), batch.complete


async def test_a_started_run_holds_its_lease_until_it_ends() -> None:
    w = World()
    await w.start(command())
    assert await w.leases.hold(TENANT, RunId("r1")) is False  # held by its start
    execute = executor(w.uow, w.log, OfflineChatModel())
    execute._leases = w.leases
    await execute(w.launcher.launched[0])
    w.lapse()
    assert await w.recovery.sweep() == 0  # released when it ended: nothing to claim
    run = await w.run()
    assert run is not None and run.status is RunStatus.SUCCEEDED


async def test_a_run_whose_lease_lapsed_is_ended_as_lost_once() -> None:
    w = World()
    await w.start(command())  # its instance dies before executing it
    w.lapse()
    assert await w.recovery.sweep() == 1
    run = await w.run()
    assert run is not None
    assert (run.status, run.error_code) == (RunStatus.FAILED, LOST_CODE)
    events, complete = await w.events()
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFailed) and events[-1].code == LOST_CODE
    assert complete
    w.lapse()
    assert await w.recovery.sweep() == 0  # its lease went with it


async def test_a_run_that_ended_before_its_lease_lapsed_keeps_its_outcome() -> None:
    w = World()
    await w.start(command())
    run = await w.run()
    assert run is not None
    run.start()
    run.succeed(usage=Usage(input_tokens=1, output_tokens=2), at_ms=5)
    await w.journal.record_end(run, [])  # recorded, then the instance died: no end logged
    w.lapse()
    assert await w.recovery.sweep() == 0
    stored = await w.run()
    assert stored is not None and stored.status is RunStatus.SUCCEEDED
    events, complete = await w.events()
    assert isinstance(events[-1], RunFinished) and complete


async def test_a_database_that_cannot_be_reached_leaves_the_run_to_the_next_sweep() -> None:
    w = World()
    await w.start(command())
    w.lapse()
    real = w.journal.record_end

    async def down(*args, **kwargs):
        raise ServiceUnavailable("the database is unavailable")

    w.journal.record_end = down  # type: ignore[method-assign]
    assert await w.recovery.sweep() == 0
    w.journal.record_end = real  # type: ignore[method-assign]
    w.lapse()
    assert await w.recovery.sweep() == 1
    run = await w.run()
    assert run is not None and run.error_code == LOST_CODE


async def test_a_restarted_single_instance_ends_every_unfinished_run_of_every_tenant() -> None:
    w = World()
    await w.seed()
    await w.start(command("r1"))
    await w.start(command("r2"))
    fresh = RecoverLostRuns(MemoryRunLeases(), w.uow, w.journal, w.log, FixedClock())
    assert await fresh.at_start() == 2
    for run_id in ("r1", "r2"):
        run = await w.run(run_id)
        assert run is not None and run.error_code == LOST_CODE
    assert await fresh.at_start() == 0
