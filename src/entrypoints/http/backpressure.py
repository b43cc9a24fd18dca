"""Back-pressure on run starts: at most ``capacity`` starts in progress per process, the rest
waiting their turn, tenants taking turns.

A start (authentication and limits done, the body read, the run recorded and launched) is the
part of a run that needs the database, Redis and most of the CPU; the stream that follows holds
nothing pooled. Without a bound, a burst of thousands of starts all queue inside the connection
pools at once, where the run journal's own writes and other requests then wait behind them, and
those still waiting when a pool's timeout runs out fail with a bare error. Here they wait in
front instead, in a queue that is cheap to hold, fair between tenants (one tenant's burst delays
another tenant's start by at most one turn per waiting tenant) and first come first served
within a tenant. A start still waiting after ``timeout_s`` is refused with 503 ``server_busy``
and a ``Retry-After`` estimated from how fast starts have been going (ADR 0036)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from dishka import Provider, provide
from dishka import Scope as DiScope

from application.errors import ServiceUnavailable

W = TypeVar("W")


class StartQueue(Generic[W]):
    """The gate's bookkeeping, without a clock or a loop: ``capacity`` places, and waiters per
    tenant served round-robin across tenants, in arrival order within one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a start queue needs at least one place")
        self.capacity = capacity
        self.inside = 0
        self.waiting = 0
        self._turns: OrderedDict[str, deque[W]] = OrderedDict()

    def try_enter(self) -> bool:
        """Takes a place at once if one is free and nobody is waiting for it."""
        if self.inside < self.capacity and not self.waiting:
            self.inside += 1
            return True
        return False

    def wait(self, tenant: str, waiter: W) -> None:
        queue = self._turns.get(tenant)
        if queue is None:
            queue = self._turns[tenant] = deque()
        queue.append(waiter)
        self.waiting += 1

    def give_up(self, tenant: str, waiter: W) -> bool:
        """Takes a waiter out of the queue; False when it was already let in."""
        queue = self._turns.get(tenant)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        self.waiting -= 1
        if not queue:
            del self._turns[tenant]
        return True

    def leave(self) -> W | None:
        """A start left its place: the waiter it passes to (the next tenant's oldest), or None
        when nobody waits and the place is free."""
        if not self._turns:
            self.inside -= 1
            return None
        tenant, queue = next(iter(self._turns.items()))
        waiter = queue.popleft()
        self.waiting -= 1
        if queue:
            self._turns.move_to_end(tenant)
        else:
            del self._turns[tenant]
        return waiter


@dataclass(slots=True)
class GateStats:
    """Starts let in at once, let in after waiting, and refused after waiting too long; the
    number waiting now."""

    immediate: int = 0
    queued: int = 0
    refused: int = 0
    waiting: int = 0


class StartGate:
    def __init__(
        self,
        capacity: int,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue: StartQueue[asyncio.Future[None]] = StartQueue(capacity)
        self._timeout_s = timeout_s
        self._clock = clock
        # A moving average of how long a start holds its place, for Retry-After.
        self._hold_s = 0.01
        self.stats = GateStats()

    @property
    def capacity(self) -> int:
        return self._queue.capacity

    def retry_after_s(self) -> float:
        """About when the starts waiting now will all have had their turn."""
        q = self._queue
        return max(1.0, min(60.0, (q.waiting + 1) / q.capacity * self._hold_s))

    async def enter(self, tenant: str) -> None:
        """Returns once the caller holds a place (then ``leave`` it exactly once); raises
        ``ServiceUnavailable`` ``server_busy`` after waiting ``timeout_s`` in vain."""
        q = self._queue
        if q.try_enter():
            self.stats.immediate += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.wait(tenant, turn)
        self.stats.waiting = q.waiting
        ahead = q.waiting - 1
        try:
            async with asyncio.timeout(self._timeout_s):
                await turn
        except TimeoutError:
            if not q.give_up(tenant, turn):
                # Let in just as the time ran out: the place is ours after all.
                self.stats.queued += 1
                return
            self.stats.refused += 1
            self.stats.waiting = q.waiting
            raise ServiceUnavailable(
                f"the run start queue is full: this start waited {self._timeout_s:g} s "
                f"behind {ahead} others for one of {q.capacity} places",
                code="server_busy",
                retry_after_s=self.retry_after_s(),
            ) from None
        except BaseException:
            if not q.give_up(tenant, turn) and turn.done() and not turn.cancelled():
                self.leave(0.0)  # let in, then cancelled: pass the place on
            self.stats.waiting = q.waiting
            raise
        self.stats.queued += 1

    def leave(self, held_s: float) -> None:
        self._hold_s += (held_s - self._hold_s) / 16
        q = self._queue
        while (turn := q.leave()) is not None:
            if not turn.done():
                turn.set_result(None)
                break
            # Its task was cancelled while waiting: the place goes to the next one.
        self.stats.waiting = q.waiting

    @asynccontextmanager
    async def place(self, tenant: str) -> AsyncIterator[None]:
        """Holds a place for the block (see ``enter``)."""
        await self.enter(tenant)
        entered = self._clock()
        try:
            yield
        finally:
            self.leave(self._clock() - entered)


class StartGateProvider(Provider):
    """Hands the application's gate to the handlers."""

    scope = DiScope.APP

    def __init__(self, gate: StartGate) -> None:
        super().__init__()
        self._gate = gate

    @provide
    def gate(self) -> StartGate:
        return self._gate
