"""The run state machine: a run starts pending, runs once and ends exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.conversation.model import TRANSITIONS, Run, RunStatus, Usage
from domain.errors import InvalidTransition, InvariantViolated
from domain.ids import RunId, TenantId, ThreadId


def new_run() -> Run:
    return Run(
        id=RunId("r1"),
        tenant_id=TenantId("t"),
        thread_id=ThreadId("th"),
        agent="a",
        created_at_ms=0,
    )


ACTIONS = {
    "start": lambda r: r.start(),
    "succeed": lambda r: r.succeed(usage=Usage(input_tokens=1, output_tokens=2), at_ms=5),
    "fail": lambda r: r.fail(code="x", message="boom", at_ms=5),
    "cancel": lambda r: r.cancel(at_ms=5),
}
TARGET = {
    "start": RunStatus.RUNNING,
    "succeed": RunStatus.SUCCEEDED,
    "fail": RunStatus.FAILED,
    "cancel": RunStatus.CANCELLED,
}


@given(st.lists(st.sampled_from(sorted(ACTIONS)), max_size=8))
def test_any_sequence_of_actions_follows_the_transition_table(actions: list[str]) -> None:
    run = new_run()
    for action in actions:
        before = run.status
        allowed = TARGET[action] in TRANSITIONS[before]
        if allowed:
            ACTIONS[action](run)
            assert run.status is TARGET[action]
        else:
            with pytest.raises(InvalidTransition):
                ACTIONS[action](run)
            assert run.status is before


class RunLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.run = new_run()
        self.ended = 0
        self.started = 0

    @rule(action=st.sampled_from(sorted(ACTIONS)))
    def act(self, action: str) -> None:
        was_terminal = self.run.status.is_terminal
        try:
            ACTIONS[action](self.run)
        except InvalidTransition:
            return
        assert not was_terminal, "a terminal run moved again"
        if action == "start":
            self.started += 1
        else:
            self.ended += 1

    @precondition(lambda self: self.run.status.is_terminal)
    @rule()
    def terminal_runs_have_a_finish_time(self) -> None:
        assert self.run.finished_at_ms is not None

    @invariant()
    def ends_at_most_once_and_starts_at_most_once(self) -> None:
        assert self.ended <= 1
        assert self.started <= 1


TestRunLifecycle = RunLifecycle.TestCase


def test_failed_run_keeps_its_error_code_and_message() -> None:
    run = new_run()
    run.start()
    run.fail(code="model_error", message="provider down", at_ms=9)
    assert (run.status, run.error_code, run.error_message) == (
        RunStatus.FAILED,
        "model_error",
        "provider down",
    )


@pytest.mark.parametrize("bad", ["", " ", "x" * 129, "a\nb"])
def test_run_ids_must_be_printable_and_bounded(bad: str) -> None:
    with pytest.raises(InvariantViolated):
        Run(
            id=RunId(bad),
            tenant_id=TenantId("t"),
            thread_id=ThreadId("th"),
            agent="a",
            created_at_ms=0,
        )


def test_usage_cannot_be_negative() -> None:
    with pytest.raises(InvariantViolated):
        Usage(input_tokens=-1)
