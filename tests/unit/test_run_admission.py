"""A run's rate limits and run caps decided together (RunSlots with the request limiter's
rules), on the in-memory guard and on a guard whose store cannot be reached."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.memory.rate_limiter import MemoryConcurrencyGuard, MemoryRateLimiter
from application.errors import RateLimited, ServiceUnavailable
from application.quota.ports import Admission, Lease, RateCheck, Slot
from application.quota.use_cases import AdmitRequest, RunSlots
from domain.ids import TenantId
from domain.quota.policy import Plan, QuotaPolicy, RouteClass
from domain.tenancy.model import Principal, Role

TENANT = TenantId("ten_1")
ME = Principal(tenant_id=TENANT, tenant_slug="demo", subject="apikey:k", role=Role.MEMBER)


class Clock:
    now_us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now_us


class UnreachableGuard:
    """A guard whose store is down: every call fails as the Redis adapter's do."""

    def __init__(self) -> None:
        self.calls = 0

    async def _down(self) -> None:
        self.calls += 1
        raise ServiceUnavailable("redis is unreachable (admit run): ConnectionError")

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool:
        await self._down()
        return False

    async def admit(
        self,
        partition: str,
        checks: Sequence[RateCheck],
        slots: Sequence[Slot],
        holder: str,
        *,
        lease_s: float,
    ) -> Admission:
        await self._down()
        raise AssertionError("unreachable")

    async def renew(self, leases: Sequence[Lease], *, lease_s: float) -> None:
        await self._down()

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None:
        await self._down()

    async def held(self, partition: str, key: str) -> int:
        await self._down()
        return 0


def policy(*, runs_per_minute: int, cap: int) -> QuotaPolicy:
    plan = Plan(name="default", tenant_routes={"runs": runs_per_minute}, concurrent_runs=cap)
    return QuotaPolicy(default=plan, burst_ratio=0.4)


def memory_slots(quota: QuotaPolicy) -> tuple[RunSlots, AdmitRequest, MemoryConcurrencyGuard]:
    clock = Clock()
    limiter = MemoryRateLimiter(clock_us=clock)
    rates = AdmitRequest(limiter, quota, fail_open=True)
    guard = MemoryConcurrencyGuard(clock_us=clock, limiter=limiter)
    return RunSlots(guard, quota, lease_s=30, rates=rates), rates, guard


async def test_a_run_gets_its_places_and_its_rate_decision_in_one_step() -> None:
    slots, rates, guard = memory_slots(policy(runs_per_minute=5, cap=3))
    places = await slots.acquire(ME, "r1")
    assert places.keys == ["runs"]
    assert places.rate is not None and places.rate.binding is not None
    assert (places.rate.binding.policy, places.rate.binding.limit) == ("tenant", 5)
    assert places.rate.binding.remaining == 1
    assert await guard.held(f"t:{TENANT}", "runs") == 1
    assert (rates.stats.admitted, slots.stats.admitted) == (1, 1)


async def test_a_run_over_its_rate_limit_is_refused_without_taking_a_place() -> None:
    slots, rates, guard = memory_slots(policy(runs_per_minute=5, cap=10))
    await slots.acquire(ME, "r1")
    await slots.acquire(ME, "r2")
    with pytest.raises(RateLimited) as caught:
        await slots.acquire(ME, "r3")
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after_s > 0
    assert await guard.held(f"t:{TENANT}", "runs") == 2
    assert (rates.stats.refused, slots.stats.refused) == (1, 0)


async def test_a_run_at_the_cap_is_refused_but_counted_by_its_rate_limit() -> None:
    slots, rates, _ = memory_slots(policy(runs_per_minute=600, cap=1))
    await slots.acquire(ME, "r1")
    with pytest.raises(RateLimited) as caught:
        await slots.acquire(ME, "r2")
    assert caught.value.code == "concurrency_limited"
    assert (rates.stats.admitted, slots.stats.refused) == (2, 1)


async def test_the_run_limits_are_not_those_of_other_routes() -> None:
    slots, rates, _ = memory_slots(policy(runs_per_minute=5, cap=10))
    for holder in ("r1", "r2"):
        await slots.acquire(ME, holder)
    with pytest.raises(RateLimited):
        await slots.acquire(ME, "r3")
    # Reads are counted apart, on the plan's default allowance, untouched by the runs.
    read = await rates.principal(ME, RouteClass.READ)
    assert read is not None and read.allowed and read.binding is not None
    assert (read.binding.limit, read.binding.remaining) == (600, 239)


@pytest.mark.parametrize(
    ("rates_open", "caps_open", "outcome"),
    [(True, True, "started"), (False, True, "refused"), (True, False, "refused")],
)
async def test_an_unreachable_store_fails_each_side_as_it_is_configured(
    rates_open, caps_open, outcome
) -> None:
    quota = policy(runs_per_minute=5, cap=3)
    rates = AdmitRequest(MemoryRateLimiter(), quota, fail_open=rates_open)
    guard = UnreachableGuard()
    slots = RunSlots(guard, quota, lease_s=30, fail_open=caps_open, rates=rates)
    if outcome == "started":
        places = await slots.acquire(ME, "r1")
        assert places.keys == []
        assert places.rate is not None and places.rate.degraded
        assert (rates.stats.degraded, slots.stats.degraded) == (1, 1)
    else:
        with pytest.raises(ServiceUnavailable) as caught:
            await slots.acquire(ME, "r1")
        assert caught.value.code == "limiter_unavailable"
    assert guard.calls == 1


async def test_a_run_held_to_nothing_costs_no_call() -> None:
    quota = QuotaPolicy(default=Plan(name="default", tenant_per_minute=0))
    guard = UnreachableGuard()
    rates = AdmitRequest(MemoryRateLimiter(), quota, fail_open=False)
    places = await RunSlots(guard, quota, lease_s=30, rates=rates).acquire(ME, "r1")
    assert (places.keys, places.rate, guard.calls) == ([], None, 0)
