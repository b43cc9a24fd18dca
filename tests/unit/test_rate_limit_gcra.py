"""GCRA: the limiter admits the burst at once, then ``limit`` per window on average; refused
requests are not counted; a weighted request never overshoots; several counters decide as one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvariantViolated
from domain.quota.policy import Plan, QuotaPolicy, RouteClass
from domain.quota.rate_limit import RateLimitRule, decide, decide_all

rules = st.builds(
    lambda limit, window, ratio: RateLimitRule.sliding(
        limit=limit, window_s=window, burst_ratio=ratio
    ),
    st.integers(1, 500),
    st.sampled_from([1.0, 10.0, 60.0]),
    st.sampled_from([0.01, 0.2, 1.0]),
)
# Requests: (microseconds since the previous one, cost)
traffic = st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(1, 5)), max_size=120)
T0 = 1_000_000_000


@given(rules, traffic)
def test_admitted_units_never_exceed_burst_plus_rate_times_elapsed(rule, requests) -> None:
    tat, now, admitted = 0, T0, []
    for gap, cost in requests:
        now += gap
        outcome = decide(rule, tat, now, cost)
        if outcome.allowed:
            tat = outcome.tat_us
            admitted.append((now, cost))
    # Over any interval [a, b] of admitted requests, units ≤ burst + (b - a) / interval.
    for i in range(len(admitted)):
        units = 0
        for j in range(i, len(admitted)):
            units += admitted[j][1]
            elapsed = admitted[j][0] - admitted[i][0]
            assert units <= rule.burst + elapsed / rule.interval_us


@given(rules, traffic)
def test_admitted_units_never_exceed_the_limit_per_window_beyond_the_burst(rule, requests) -> None:
    tat, now, admitted = 0, T0, []
    for gap, cost in requests:
        now += gap
        outcome = decide(rule, tat, now, cost)
        if outcome.allowed:
            tat = outcome.tat_us
            admitted.append((now, cost))
    window_us = round(rule.window_s * 1_000_000)
    for i, (start, _) in enumerate(admitted):
        in_window = sum(c for t, c in admitted[i:] if t - start < window_us)
        assert in_window <= rule.limit + rule.burst


@given(rules, st.integers(0, 10**12), st.integers(1, 10))
def test_a_refused_request_leaves_the_state_untouched(rule, now, cost) -> None:
    tat = now + rule.tolerance_us  # full
    outcome = decide(rule, tat, now, cost)
    assert not outcome.allowed
    assert outcome.tat_us == tat
    assert outcome.retry_after_us > 0


@given(rules)
def test_a_fresh_key_admits_exactly_the_burst_at_once(rule) -> None:
    tat, admitted = 0, 0
    for _ in range(rule.burst + 5):
        outcome = decide(rule, tat, T0)
        if outcome.allowed:
            tat, admitted = outcome.tat_us, admitted + 1
    assert admitted == rule.burst


@given(rules, st.integers(1, 50))
def test_a_request_heavier_than_the_burst_is_never_admitted(rule, extra) -> None:
    assert not decide(rule, 0, T0, rule.burst + extra).allowed


@given(rules)
def test_retry_after_is_exactly_enough_to_be_admitted(rule) -> None:
    tat, now = 0, T0
    while (o := decide(rule, tat, now)).allowed:
        tat = o.tat_us
    assert not decide(rule, tat, now + o.retry_after_us - 1).allowed
    assert decide(rule, tat, now + o.retry_after_us).allowed


@given(st.lists(st.tuples(rules, st.integers(0, 10**7)), min_size=1, max_size=4), st.integers(1, 4))
def test_several_counters_admit_only_together_and_a_refusal_counts_in_none(checks, cost) -> None:
    state = [(rule, T0 + tat) for rule, tat in checks]
    allowed, outcomes = decide_all(state, T0, cost)
    alone = [decide(rule, tat, T0, cost) for rule, tat in state]
    assert allowed == all(o.allowed for o in alone)
    if allowed:
        assert outcomes == alone
    else:
        assert [o.tat_us for o in outcomes] == [tat for _, tat in state]


def test_the_burst_of_a_ratio_is_not_inflated_by_floating_point() -> None:
    assert RateLimitRule.sliding(limit=600, window_s=60, burst_ratio=0.2).burst == 120
    assert RateLimitRule.sliding(limit=1, window_s=60, burst_ratio=0.01).burst == 1


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(InvariantViolated):
        RateLimitRule(limit=0, window_s=1, burst=1)
    with pytest.raises(InvariantViolated):
        decide(RateLimitRule(limit=1, window_s=1, burst=1), 0, 0, 0)


def test_a_tenant_on_a_plan_gets_the_plans_limits_and_others_the_default() -> None:
    default = Plan(name="default", tenant_per_minute=600, tenant_routes={"runs": 60})
    gold = Plan(name="gold", tenant_per_minute=6000, concurrent_runs=50)
    policy = QuotaPolicy(default=default, plans={"gold": gold}, tenant_plans={"acme": "gold"})
    assert policy.plan_for("acme").tenant_limit(RouteClass.RUNS) == 6000
    assert policy.plan_for("other").tenant_limit(RouteClass.RUNS) == 60
    assert policy.plan_for("other").tenant_limit(RouteClass.READ) == 600


def test_a_plan_naming_an_unknown_route_class_or_missing_plan_is_refused() -> None:
    with pytest.raises(InvariantViolated, match="unknown route class"):
        Plan(name="x", tenant_routes={"run": 5})
    with pytest.raises(InvariantViolated, match="not defined"):
        QuotaPolicy(default=Plan(name="default"), tenant_plans={"acme": "gold"})


def test_a_limit_beyond_a_million_a_second_means_practically_unlimited() -> None:
    rule = RateLimitRule.sliding(limit=100_000_000, window_s=60, burst_ratio=0.2)
    assert rule.interval_us == 1
    tat = 0
    for _ in range(1000):
        outcome = decide(rule, tat, T0)
        assert outcome.allowed
        tat = outcome.tat_us
