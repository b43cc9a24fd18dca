"""The approvals a run still waits for, for a stream rebuilt from the store after the run's
live log has expired: its client must still be told what it can answer."""

from __future__ import annotations

from application.authz import authorize
from application.conversation.ports import InterruptStore
from application.ports import Clock
from domain.conversation.interrupts import Interrupt
from domain.conversation.model import Run
from domain.tenancy.model import Principal, Scope


class PendingApprovals:
    def __init__(self, interrupts: InterruptStore, clock: Clock) -> None:
        self._interrupts = interrupts
        self._clock = clock

    async def __call__(self, principal: Principal, run: Run) -> tuple[Interrupt, ...]:
        """The interrupts ``run`` opened that are still pending and not expired."""
        authorize(principal, Scope.RUNS, write=False, action="follow runs")
        now = self._clock.now_ms()
        pending = await self._interrupts.pending(principal.tenant_id, run.thread_id)
        return tuple(i for i in pending if i.run_id == run.id and not i.expired(now))
