"""Retry policy, job running and dead letters, render state machine, template sandbox."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.memory.jobs import MemoryDeadLetterStore, MemoryRenderJobRepository
from adapters.memory.knowledge import MemoryKnowledgeStore
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.render.jinja import SandboxedTemplateEngine
from application.errors import Conflict, ServiceUnavailable, TemplateFailed
from application.jobs.use_cases import ManageDeadLetters, RunJob
from application.knowledge.use_cases import IngestCommand, IngestDocument
from application.render.use_cases import RenderCommand, RequestRender
from domain.errors import InvariantViolated
from domain.ids import TenantId
from domain.jobs.model import Job, RetryPolicy
from domain.knowledge.model import IndexState
from domain.render.model import IllegalRenderTransition, RenderFormat, RenderJob, RenderState
from tests.audit_support import verified_trail
from tests.unit.test_run_use_cases import ME, FixedClock

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 100),
    base_ms=st.integers(0, 10_000),
    cap_ms=st.integers(10_000, 3_600_000),
)


@given(policies, st.integers(1, 100), st.floats(0, 1, exclude_max=True))
def test_a_retry_waits_between_half_and_all_of_its_capped_exponential_ceiling(
    policy, attempt, unit
) -> None:
    delay = policy.delay_ms(attempt, unit)
    ceiling = min(policy.cap_ms, policy.base_ms * 2 ** (attempt - 1))
    assert ceiling // 2 <= delay <= ceiling <= policy.cap_ms


@given(policies, st.integers(1, 99))
def test_the_ceiling_never_shrinks_from_one_attempt_to_the_next(policy, attempt) -> None:
    assert policy.ceiling_ms(attempt) <= policy.ceiling_ms(attempt + 1)


@given(policies, st.integers(1, 100))
def test_a_job_gets_exactly_max_attempts_tries(policy, attempt) -> None:
    assert policy.exhausted(attempt) == (attempt >= policy.max_attempts)


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(InvariantViolated):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvariantViolated):
        RetryPolicy(base_ms=10, cap_ms=5)
    with pytest.raises(InvariantViolated):
        RetryPolicy().delay_ms(1, 1.0)


class RecordingQueue:
    """A queue that runs nothing: it records what was queued, and after what delay."""

    def __init__(self) -> None:
        self.now: list[Job] = []
        self.later: list[tuple[Job, int]] = []

    async def enqueue(self, job: Job) -> None:
        self.now.append(job)

    async def enqueue_later(self, job: Job, delay_ms: int) -> None:
        self.later.append((job, delay_ms))


def job(kind: str = "flaky", key: str = "k1", attempt: int = 1) -> Job:
    return Job(kind=kind, tenant_id=TenantId("ten_a"), key=key, args={"x": "1"}, attempt=attempt)


async def test_a_failing_job_is_retried_with_backoff_then_dead_lettered_and_retried_on_request():
    calls: list[int] = []

    async def always_fails(j: Job) -> None:
        calls.append(j.attempt)
        raise RuntimeError("upstream down")

    queue, dead = RecordingQueue(), MemoryDeadLetterStore()
    policy = RetryPolicy(max_attempts=3, base_ms=100, cap_ms=1_000)
    run = RunJob({"flaky": always_fails}, queue, dead, FixedClock(), policy, rand=lambda: 0.5)
    current = job()
    for _ in range(3):
        await run(current)
        if queue.later:
            current, _ = queue.later[-1]
    assert calls == [1, 2, 3]
    assert [(j.attempt, d) for j, d in queue.later] == [(2, 75), (3, 150)]
    letters = await dead.list(limit=10)
    assert len(letters) == 1
    assert letters[0].job.attempt == 3
    assert letters[0].job.key == "k1"
    assert "RuntimeError: upstream down" in letters[0].error
    assert run.stats.retried == 2
    assert run.stats.dead_lettered == 1

    manage = ManageDeadLetters(dead, queue)
    retried = await manage.retry(letters[0].id)
    assert retried.id == letters[0].id
    assert [(j.kind, j.key, j.attempt, dict(j.args)) for j in queue.now] == [
        ("flaky", "k1", 1, {"x": "1"})
    ]
    assert await dead.count() == 0


async def test_a_job_of_an_unknown_kind_is_dead_lettered_at_once() -> None:
    queue, dead = RecordingQueue(), MemoryDeadLetterStore()
    run = RunJob({}, queue, dead, FixedClock(), RetryPolicy())
    await run(job(kind="mystery"))
    assert queue.later == []
    [letter] = await dead.list(limit=10)
    assert "no handler" in letter.error


async def test_a_succeeding_job_leaves_nothing_behind() -> None:
    seen: list[str] = []

    async def ok(j: Job) -> None:
        seen.append(j.key)

    queue, dead = RecordingQueue(), MemoryDeadLetterStore()
    run = RunJob({"flaky": ok}, queue, dead, FixedClock(), RetryPolicy())
    await run(job())
    assert seen == ["k1"]
    assert queue.later == [] and await dead.count() == 0


class RenderMachine(RuleBasedStateMachine):
    """Any sequence of transitions keeps a render's invariants: done is final, artifacts exist
    exactly when done, attempts count starts."""

    def __init__(self) -> None:
        super().__init__()
        self.job = RenderJob(
            id="r1",
            tenant_id=TenantId("t"),
            template="inline:x",
            formats=(RenderFormat.MARKDOWN, RenderFormat.PDF),
        )
        self.starts = 0
        self.was_done = False

    @rule()
    def start(self) -> None:
        if self.job.state is RenderState.DONE:
            with pytest.raises(IllegalRenderTransition):
                self.job.start(1)
            return
        self.job.start(1)
        self.starts += 1

    @rule(complete=st.booleans())
    def complete(self, complete: bool) -> None:
        artifacts = {"markdown": "a", "pdf": "b"} if complete else {"markdown": "a"}
        if self.job.state is not RenderState.RUNNING or not complete:
            with pytest.raises(InvariantViolated):
                self.job.complete(artifacts, 2)
            return
        self.job.complete(artifacts, 2)
        self.was_done = True

    @rule()
    def fail(self) -> None:
        if self.job.state in (RenderState.DONE, RenderState.FAILED):
            with pytest.raises(IllegalRenderTransition):
                self.job.fail("x", 3)
            return
        self.job.fail("boom", 3)

    @invariant()
    def artifacts_exactly_when_done(self) -> None:
        assert bool(self.job.artifacts) == (self.job.state is RenderState.DONE)
        assert self.job.attempts == self.starts

    @precondition(lambda self: self.was_done)
    @invariant()
    def done_is_final(self) -> None:
        assert self.job.state is RenderState.DONE


TestRenderStateMachine = RenderMachine.TestCase


ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ data.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].listdir('/') }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% extends '/etc/hostname' %}",
    "{{ items.append(1) }}",
    "{{ range(10**9) | list | length }}",
    "{{ missing_name }}",
    "{{ 1/0 }}",
    "{% for x in x %}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_template_reaching_for_internals_or_files_fails_safely(template) -> None:
    engine = SandboxedTemplateEngine()
    with pytest.raises(TemplateFailed):
        engine.render(template, {"data": {"a": 1}, "items": [1, 2]})


def test_a_template_renders_its_data_and_output_is_bounded() -> None:
    engine = SandboxedTemplateEngine(max_output_chars=1_000)
    out = engine.render(
        "# Invoice {{ number }}\n{% for l in lines %}- {{ l.item }}: {{ l.qty }}\n{% endfor %}",
        {"number": 7, "lines": [{"item": "Tea", "qty": 2}, {"item": "Cups", "qty": 4}]},
    )
    assert out == "# Invoice 7\n- Tea: 2\n- Cups: 4\n"
    with pytest.raises(TemplateFailed):
        engine.render("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", {})


def test_compiled_templates_are_reused_and_the_cache_stays_bounded() -> None:
    engine = SandboxedTemplateEngine(cache_size=2)
    sources = [f"{i}: {{{{ v }}}}" for i in range(3)]
    for round_ in range(2):
        for i, source in enumerate(sources):
            assert engine.render(source, {"v": round_}) == f"{i}: {round_}"
    assert len(engine._compiled) == 2
    assert list(engine._compiled) == sources[1:]
    again = engine._compiled[sources[2]]
    engine.render(sources[2], {"v": 9})
    assert engine._compiled[sources[2]] is again


class DownQueue:
    """A queue whose broker cannot be reached."""

    async def enqueue(self, job: Job) -> None:
        raise ServiceUnavailable("the job queue is unavailable")

    async def enqueue_later(self, job: Job, delay_ms: int) -> None:
        raise ServiceUnavailable("the job queue is unavailable")


async def test_a_render_that_cannot_be_queued_fails_at_once_instead_of_waiting_for_ever() -> None:
    uow = MemoryUnitOfWork()
    renders = MemoryRenderJobRepository(uow)
    request = RequestRender(renders, DownQueue(), FixedClock())
    command = RenderCommand(principal=ME, template="inline:# Hi", data={}, render_id="r1")
    with pytest.raises(ServiceUnavailable):
        await request(command)
    stored = await renders.get(ME.tenant_id, "r1")
    assert stored is not None
    assert stored.state is RenderState.FAILED
    assert stored.error == "the render could not be queued; request it again"
    trail = await verified_trail(uow, ME.tenant_id)
    assert [(e.action, e.details.get("error")) for e in trail] == [
        ("render.requested", None),
        ("render.finished", "queue_unavailable"),
    ]
    # Its id stays taken: a new request takes a new id.
    with pytest.raises(Conflict):
        await RequestRender(renders, RecordingQueue(), FixedClock())(command)


async def test_a_document_whose_indexing_cannot_be_queued_fails_until_it_is_posted_again() -> None:
    store = MemoryKnowledgeStore()
    command = IngestCommand(principal=ME, title="Refunds", content="# Refunds", document_id="d1")
    with pytest.raises(ServiceUnavailable):
        await IngestDocument(store, FixedClock(), DownQueue())(command)
    status = await store.status(ME.tenant_id, "d1")
    assert status is not None
    assert status.state is IndexState.FAILED
    assert status.error == "indexing could not be queued; post the document again"
    queue = RecordingQueue()
    again = await IngestDocument(store, FixedClock(), queue)(command)
    assert again.status.state is IndexState.QUEUED
    assert [(j.kind, j.args["document_id"]) for j in queue.now] == [("kb.index", "d1")]
