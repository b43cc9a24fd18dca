"""Run leases in this process: for one instance, where a lease can lapse only if the process
stalls for longer than its term (a process that dies takes its leases with it, and its runs
are ended when the next process starts: ``RecoverLostRuns.at_start``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from domain.ids import RunId, TenantId


class MemoryRunLeases:
    def __init__(self, *, term_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.term_s = term_s
        self._clock = clock
        # Lease deadlines by run; the runs this process executes and renews.
        self._deadlines: dict[tuple[TenantId, RunId], float] = {}
        self._held: set[tuple[TenantId, RunId]] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def hold(self, tenant_id: TenantId, run_id: RunId) -> bool:
        key = (tenant_id, run_id)
        if key in self._deadlines:
            return False
        self._deadlines[key] = self._clock() + self.term_s
        self._held.add(key)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return True

    async def release(self, tenant_id: TenantId, run_id: RunId) -> None:
        self._deadlines.pop((tenant_id, run_id), None)
        self._held.discard((tenant_id, run_id))

    async def claim_lapsed(self, *, limit: int) -> list[tuple[TenantId, RunId]]:
        now = self._clock()
        lapsed = [key for key, deadline in self._deadlines.items() if deadline <= now][:limit]
        for key in lapsed:
            # Held for the claimer now, no longer renewed as this process's own run.
            self._deadlines[key] = now + self.term_s
            self._held.discard(key)
        return lapsed

    def renew(self) -> None:
        deadline = self._clock() + self.term_s
        for key in self._held:
            self._deadlines[key] = deadline

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.term_s / 3)
            self.renew()
