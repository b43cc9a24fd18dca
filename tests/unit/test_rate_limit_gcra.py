"""GCRA: the limiter admits the burst at once, then ``limit`` per window on average; refused
requests are not counted; a weighted request never overshoots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvariantViolated
from domain.quota.rate_limit import RateLimitRule, decide

rules = st.builds(
    lambda limit, window, ratio: RateLimitRule.sliding(
        limit=limit, window_s=window, burst_ratio=ratio
    ),
    st.integers(1, 500),
    st.sampled_from([1.0, 10.0, 60.0]),
    st.sampled_from([0.01, 0.2, 1.0]),
)
# Requests: (seconds since the previous one, cost)
traffic = st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 5)), max_size=120)


@given(rules, traffic)
def test_admitted_units_never_exceed_burst_plus_rate_times_elapsed(rule, requests) -> None:
    tat, now, admitted = 0.0, 1000.0, []
    for gap, cost in requests:
        now += gap
        outcome = decide(rule, tat, now, cost)
        if outcome.allowed:
            tat = outcome.tat
            admitted.append((now, cost))
    # Over any interval [a, b] of admitted requests, units ≤ burst + (b - a) / interval.
    for i in range(len(admitted)):
        units = 0
        for j in range(i, len(admitted)):
            units += admitted[j][1]
            elapsed = admitted[j][0] - admitted[i][0]
            assert units <= rule.burst + elapsed / rule.interval_s + 1e-6


@given(rules, st.floats(0, 1e6, allow_nan=False), st.integers(1, 10))
def test_a_refused_request_leaves_the_state_untouched(rule, now, cost) -> None:
    tat = now + rule.tolerance_s  # full
    outcome = decide(rule, tat, now, cost)
    assert not outcome.allowed
    assert outcome.tat == tat
    assert outcome.retry_after_s > 0


@given(rules)
def test_a_fresh_key_admits_exactly_the_burst_at_once(rule) -> None:
    tat, admitted = 0.0, 0
    for _ in range(rule.burst + 5):
        outcome = decide(rule, tat, 100.0)
        if outcome.allowed:
            tat, admitted = outcome.tat, admitted + 1
    assert admitted == rule.burst


@given(rules, st.integers(1, 50))
def test_a_request_heavier_than_the_burst_is_never_admitted(rule, extra) -> None:
    assert not decide(rule, 0.0, 50.0, rule.burst + extra).allowed


@given(rules)
def test_retry_after_is_enough_to_be_admitted(rule) -> None:
    tat, now = 0.0, 10.0
    while (o := decide(rule, tat, now)).allowed:
        tat = o.tat
    assert decide(rule, tat, now + o.retry_after_s + 1e-6).allowed


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(InvariantViolated):
        RateLimitRule(limit=0, window_s=1, burst=1)
    with pytest.raises(InvariantViolated):
        decide(RateLimitRule(limit=1, window_s=1, burst=1), 0.0, 0.0, 0)
