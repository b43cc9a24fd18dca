"""Token budgets: periods are whole UTC days or months around any instant; the state only
rises with usage; a soft limit above the hard one is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvariantViolated
from domain.quota.budget import (
    DAY_MS,
    BudgetPeriod,
    BudgetState,
    TokenBudget,
    period_bounds,
    utc_day,
)

instants = st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 … 2100


@given(instants)
def test_a_day_period_is_the_utc_day_holding_the_instant(now) -> None:
    start, end = period_bounds(BudgetPeriod.DAY, now)
    assert start <= now < end and end - start == DAY_MS
    assert datetime.fromtimestamp(start / 1000, tz=UTC).strftime("%H:%M:%S") == "00:00:00"
    assert utc_day(start // DAY_MS) == datetime.fromtimestamp(now / 1000, tz=UTC).strftime(
        "%Y-%m-%d"
    )


@given(instants)
def test_a_month_period_runs_from_the_first_to_the_next_first(now) -> None:
    start, end = period_bounds(BudgetPeriod.MONTH, now)
    assert start <= now < end
    first = datetime.fromtimestamp(start / 1000, tz=UTC)
    after = datetime.fromtimestamp(end / 1000, tz=UTC)
    assert (first.day, first.hour, after.day, after.hour) == (1, 0, 1, 0)
    assert (after.year * 12 + after.month) - (first.year * 12 + first.month) == 1


limits = st.integers(min_value=0, max_value=10_000)


@given(limits, limits, st.integers(0, 20_000), st.integers(0, 20_000))
def test_the_state_only_rises_with_usage(a, b, used, more) -> None:
    soft, hard = sorted((a, b)) if a and b else (a, b)
    budget = TokenBudget(soft_tokens=soft, hard_tokens=hard)
    order = [BudgetState.OK, BudgetState.SOFT, BudgetState.HARD]
    assert order.index(budget.state(used)) <= order.index(budget.state(used + more))
    if hard:
        assert (budget.state(used) is BudgetState.HARD) == (used >= hard)
    else:
        assert budget.state(used) is not BudgetState.HARD


def test_budgets_that_cannot_hold_are_refused() -> None:
    with pytest.raises(InvariantViolated):
        TokenBudget(soft_tokens=10, hard_tokens=5)
    with pytest.raises(InvariantViolated):
        TokenBudget(hard_tokens=-1)
    assert not TokenBudget().enabled
