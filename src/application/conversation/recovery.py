"""Runs whose instance is gone: ended, so that no run stays pending and no stream waits forever.

A run is executed by the instance that started it, under a lease it renews (``RunLeases``).
When an instance dies (``kill -9``, a lost node), its leases lapse; every instance sweeps for
lapsed leases, and the one that claims a run records it as failed with ``instance_lost`` and
logs RUN_ERROR on its stream, so every client following it, on any instance, sees it end.
Ending rather than re-executing is deliberate: a run may have called tools with effects
(a task created, a document rendered), which a second execution would repeat."""

from __future__ import annotations

from application.conversation.ports import RunEventLog, RunJournal, RunLeases
from application.errors import ApplicationError
from application.ports import Clock, UnitOfWork
from domain.conversation.events import RunEvent, RunFailed, RunFinished
from domain.conversation.model import Run, RunStatus
from domain.ids import RunId, TenantId

LOST_CODE = "instance_lost"
LOST_MESSAGE = "the instance executing the run stopped; start the run again"


def outcome_event(run: Run) -> RunEvent:
    """The terminal event of an ended run, as its record tells it."""
    if run.status is RunStatus.SUCCEEDED:
        return RunFinished(thread_id=run.thread_id, run_id=run.id, usage=run.usage)
    return RunFailed(code=run.error_code or str(run.status), message=run.error_message or "")


class RecoverLostRuns:
    def __init__(
        self,
        leases: RunLeases,
        uow: UnitOfWork,
        journal: RunJournal,
        events: RunEventLog,
        clock: Clock,
    ) -> None:
        self._leases = leases
        self._uow = uow
        self._journal = journal
        self._events = events
        self._clock = clock

    async def sweep(self, *, limit: int = 100) -> int:
        """Ends the runs of lapsed leases this instance claims; returns how many it ended."""
        ended = 0
        for tenant_id, run_id in await self._leases.claim_lapsed(limit=limit):
            ended += await self.end(tenant_id, run_id)
        return ended

    async def at_start(self, *, limit: int = 1000) -> int:
        """For a deployment of one instance, whose leases live in its process: the runs a
        previous process left pending or running are its, and it is gone."""
        async with self._uow.admin_transaction(
            "system:recovery", "end runs of a stopped process"
        ) as tx:
            tenants = [t.id for t in await tx.tenants.list()]
        ended = 0
        for tenant_id in tenants:
            async with self._uow.transaction(tenant_id) as tx:
                runs = await tx.runs.unfinished(tenant_id, limit=limit)
            for run in runs:
                ended += await self.end(tenant_id, run.id)
        return ended

    async def end(self, tenant_id: TenantId, run_id: RunId) -> int:
        """Records the run as lost and ends its log; 1 if this call ended it. The lease is given
        up however it goes, except when the database cannot be reached: then it lapses again
        and the next sweep tries once more."""
        try:
            async with self._uow.transaction(tenant_id) as tx:
                run = await tx.runs.get(tenant_id, run_id)
            if run is None or run.status.is_terminal:
                # The run ended (or was never recorded) and only its lease outlived it; its
                # stream may still lack the end if the instance died right after recording it.
                if run is not None:
                    await self._events.end_lost(tenant_id, run_id, outcome_event(run))
                await self._leases.release(tenant_id, run_id)
                return 0
            run.fail(code=LOST_CODE, message=LOST_MESSAGE, at_ms=self._clock.now_ms())
            await self._journal.record_end(run, ())
            await self._events.end_lost(tenant_id, run_id, outcome_event(run))
        except ApplicationError:
            return 0
        await self._leases.release(tenant_id, run_id)
        return 1
