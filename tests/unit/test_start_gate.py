"""The run start gate: a bounded number of starts in progress, the rest waiting their turn,
tenants taking turns; a start that waits too long is refused with a time to come back."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from application.errors import ServiceUnavailable
from entrypoints.http.backpressure import StartGate, StartQueue

TENANTS = st.sampled_from(["a", "b", "c"])


class StartQueueMachine(RuleBasedStateMachine):
    """Starts arrive, leave and give up in any order; the queue must stay within its places,
    never leave a place idle while someone waits, serve each tenant in arrival order and never
    let a tenant take two turns while another tenant waits through both."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 2
        self.queue: StartQueue[int] = StartQueue(self.capacity)
        self.next_id = 0
        self.inside: list[int] = []
        self.waiting: dict[int, str] = {}  # waiter -> tenant, in arrival order
        self.tenant_of: dict[int, str] = {}
        self.admitted: list[int] = []  # waiters let in after waiting, in order

    @rule(tenant=TENANTS)
    def arrive(self, tenant: str) -> None:
        start = self.next_id
        self.next_id += 1
        self.tenant_of[start] = tenant
        if self.queue.try_enter():
            assert not self.waiting, "a start jumped the queue"
            self.inside.append(start)
        else:
            self.queue.wait(tenant, start)
            self.waiting[start] = tenant

    @precondition(lambda self: self.inside)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        start = data.draw(st.sampled_from(self.inside))
        self.inside.remove(start)
        heirs = dict(self.waiting)
        following = self.queue.leave()
        if following is None:
            assert not heirs, "a place was freed while starts were waiting"
            return
        tenant = heirs.pop(following)
        # First come, first served within the tenant.
        assert following == min(w for w, t in self.waiting.items() if t == tenant)
        # No tenant takes two turns while another one waited through both.
        if self.admitted:
            previous = self.admitted[-1]
            before = self.tenant_of[previous]
            if before == tenant:
                others = {t for w, t in self.waiting.items() if w < previous and t != tenant}
                assert not others, f"{tenant} served twice while {others} waited"
        del self.waiting[following]
        self.admitted.append(following)
        self.inside.append(following)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def give_up(self, data: st.DataObject) -> None:
        start = data.draw(st.sampled_from(sorted(self.waiting)))
        assert self.queue.give_up(self.waiting.pop(start), start)
        assert not self.queue.give_up(self.tenant_of[start], start)

    @invariant()
    def within_its_places_and_never_idle_while_starts_wait(self) -> None:
        assert self.queue.inside == len(self.inside) <= self.capacity
        assert self.queue.waiting == len(self.waiting)
        if self.waiting:
            assert self.queue.inside == self.capacity


TestStartQueue = StartQueueMachine.TestCase
TestStartQueue.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


async def test_a_start_waiting_longer_than_the_limit_is_refused_with_a_time_to_retry() -> None:
    gate = StartGate(1, timeout_s=0.01)
    await gate.enter("a")
    with pytest.raises(ServiceUnavailable) as refused:
        await gate.enter("b")
    assert refused.value.code == "server_busy"
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    assert "run start queue" in refused.value.message
    assert (gate.stats.immediate, gate.stats.refused, gate.stats.waiting) == (1, 1, 0)
    # The refused start took nothing: the next one gets the place once it is free.
    gate.leave(0.0)
    await gate.enter("b")
    assert gate.stats.immediate == 2


async def test_starts_queue_and_go_in_as_places_free_up() -> None:
    gate = StartGate(1, timeout_s=60)
    order: list[str] = []

    async def start(name: str) -> None:
        async with gate.place(name):
            order.append(name)
            await asyncio.sleep(0)

    await gate.enter("first")
    waiting = [asyncio.create_task(start(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert gate.stats.waiting == 3 and not order
    gate.leave(0.0)
    await asyncio.gather(*waiting)
    assert order == ["a", "b", "c"]
    assert (gate.stats.queued, gate.stats.refused, gate.stats.waiting) == (3, 0, 0)


async def test_a_waiting_start_that_is_cancelled_passes_its_turn_on() -> None:
    gate = StartGate(1, timeout_s=60)
    await gate.enter("a")
    gone = asyncio.create_task(gate.enter("b"))
    kept = asyncio.create_task(gate.enter("c"))
    await asyncio.sleep(0)
    gone.cancel()
    gate.leave(0.0)
    await asyncio.wait_for(kept, 5)
    assert gone.cancelled()
    assert (gate.stats.immediate, gate.stats.queued, gate.stats.waiting) == (1, 1, 0)
    # c holds the one place: the next start waits for it.
    later = asyncio.create_task(gate.enter("d"))
    await asyncio.sleep(0)
    assert not later.done() and gate.stats.waiting == 1
    gate.leave(0.0)
    await asyncio.wait_for(later, 5)


def test_a_gate_needs_a_place() -> None:
    with pytest.raises(ValueError, match="at least one place"):
        StartQueue(0)
