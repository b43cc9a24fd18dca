"""Starting and executing runs, with in-memory adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from adapters.llm.offline import LoadTestChatModel, OfflineChatModel
from adapters.memory.event_log import MemoryRunEventLog
from adapters.memory.interrupts import MemoryInterruptStore
from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.knowledge import MemoryKnowledgeStore
from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.rate_limiter import MemoryConcurrencyGuard
from adapters.memory.tools import MemoryToolAudit, StaticToolPolicy
from adapters.memory.usage import MemoryUsageLedger
from application.conversation.ports import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    RunAssignment,
    TextChunk,
    UsageChunk,
)
from application.conversation.use_cases import (
    CancelRun,
    ExecuteRun,
    StartRun,
    StartRunCommand,
)
from application.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelError,
    NotFound,
    RateLimited,
)
from application.quota.use_cases import BudgetGuard, RunSlots
from application.tools.use_cases import InvokeTool, ListTools
from domain.conversation.events import (
    RunFailed,
    RunFinished,
    RunStarted,
    StateDelta,
    StateSnapshot,
    StepFinished,
    StepStarted,
    TextDelta,
    TextMessageEnded,
    TextMessageStarted,
)
from domain.conversation.model import Message, Role, RunStatus, Usage
from domain.ids import MessageId, RunId, TenantId, ThreadId
from domain.knowledge.model import KbDocument
from domain.knowledge.text import ContentType
from domain.quota.budget import TokenBudget
from domain.quota.policy import Plan, QuotaPolicy
from domain.tenancy.model import Principal
from domain.tenancy.model import Role as KeyRole
from tests.support import builtin_tools

TENANT = TenantId("ten_1")
ME = Principal(tenant_id=TENANT, tenant_slug="demo", subject="apikey:k", role=KeyRole.MEMBER)


class FixedClock:
    def now_ms(self) -> int:
        return 1_700_000_000_000


@dataclass
class RecordingLauncher:
    launched: list[RunAssignment] = field(default_factory=list)
    cancelled: list[RunId] = field(default_factory=list)

    def launch(self, assignment: RunAssignment) -> None:
        self.launched.append(assignment)

    def cancel(self, tenant_id: TenantId, run_id: RunId) -> bool:
        self.cancelled.append(run_id)
        return True

    async def drain(self, grace_s: float) -> None:
        return None


def executor(
    uow,
    log,
    model,
    *,
    audit: MemoryToolAudit | None = None,
    max_steps: int = 8,
    policy: StaticToolPolicy | None = None,
    slots: RunSlots | None = None,
) -> ExecuteRun:
    clock = FixedClock()
    registry = builtin_tools(clock)
    policy = policy or StaticToolPolicy(["*"], {})
    return ExecuteRun(
        TransactionalRunJournal(uow),
        log,
        model,
        clock,
        InvokeTool(registry, policy, audit or MemoryToolAudit(), clock, timeout_s=5),
        ListTools(registry, policy),
        MemoryInterruptStore(),
        max_steps=max_steps,
        slots=slots,
    )


def user(id: str, text: str) -> Message:
    return Message(id=MessageId(id), role=Role.USER, content=text)


def command(run_id: str = "r1", *messages: Message, principal: Principal = ME) -> StartRunCommand:
    return StartRunCommand(
        principal=principal,
        agent="assistant",
        thread_id="t1",
        run_id=run_id,
        messages=list(messages) or [user("u1", "hello")],
        forwarded_props={},
    )


def capped_world(slots: RunSlots, budget: TokenBudget | None = None):
    uow, log, launcher = MemoryUnitOfWork(), MemoryRunEventLog(), RecordingLauncher()
    journal = TransactionalRunJournal(uow)
    policy = QuotaPolicy(default=Plan(name="default", budget=budget or TokenBudget()))
    guard = BudgetGuard(MemoryUsageLedger(uow), policy, FixedClock(), ttl_ms=0)
    start = StartRun(
        journal, log, launcher, FixedClock(), MemoryInterruptStore(), uow, slots, guard
    )
    return uow, log, launcher, start


@pytest.fixture
def world():
    guard, policy = MemoryConcurrencyGuard(), QuotaPolicy(default=Plan(name="default"))
    return capped_world(RunSlots(guard, policy, lease_s=30))


async def all_events(log: MemoryRunEventLog, run_id: str = "r1"):
    batch = await log.read(TENANT, RunId(run_id), after=0, wait_s=0)
    assert batch is not None
    return list(batch.events), batch.complete


async def test_starting_a_run_persists_it_logs_run_started_and_launches_it(world) -> None:
    uow, log, launcher, start = world
    started = await start(command())
    run = started.run
    assert run.status is RunStatus.PENDING
    assert not started.attached
    events, complete = await all_events(log)
    assert events == [RunStarted(thread_id=ThreadId("t1"), run_id=RunId("r1"))]
    assert not complete
    assert [a.run_id for a in launcher.launched] == ["r1"]
    async with uow.transaction(TENANT) as tx:
        assert (await tx.runs.get(TENANT, RunId("r1"))) == run
        assert [m.id for m in await tx.threads.list_messages(TENANT, ThreadId("t1"))] == ["u1"]


async def test_resent_history_is_stored_once(world) -> None:
    uow, _, _, start = world
    await start(command("r1", user("u1", "a")))
    await start(command("r2", user("u1", "a"), user("u2", "b")))
    async with uow.transaction(TENANT) as tx:
        assert [m.id for m in await tx.threads.list_messages(TENANT, ThreadId("t1"))] == [
            "u1",
            "u2",
        ]


async def test_a_reused_run_id_attaches_to_the_run_and_nothing_is_launched_twice(world) -> None:
    _, _, launcher, start = world
    first = await start(command())
    again = await start(command())
    assert again.attached
    assert again.run == first.run
    assert len(launcher.launched) == 1


async def test_a_run_id_reused_on_another_thread_is_a_conflict(world) -> None:
    _, _, launcher, start = world
    await start(command())
    other = StartRunCommand(
        principal=ME,
        agent="assistant",
        thread_id="another-thread",
        run_id="r1",
        messages=[user("u9", "hi")],
        forwarded_props={},
    )
    with pytest.raises(Conflict) as caught:
        await start(other)
    assert caught.value.code == "run_id_taken"
    assert len(launcher.launched) == 1


class StuckModel:
    """Streams one chunk, then fails or waits until cancelled."""

    def __init__(self, *, fail: bool) -> None:
        self.fail = fail
        self.streaming = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield TextChunk("thinking")
        self.streaming.set()
        if self.fail:
            raise ModelError("the provider went away", code="model_unavailable")
        await asyncio.Event().wait()


def capped(guard: MemoryConcurrencyGuard, *, tenant: int, principal: int = 0) -> RunSlots:
    plan = Plan(name="default", concurrent_runs=tenant, concurrent_runs_per_principal=principal)
    return RunSlots(guard, QuotaPolicy(default=plan), lease_s=30)


@pytest.mark.parametrize("outcome", ["finished", "failed", "cancelled"])
async def test_a_tenant_at_its_run_cap_is_refused_until_a_run_ends_however_it_ends(
    outcome,
) -> None:
    guard = MemoryConcurrencyGuard()
    slots = capped(guard, tenant=1)
    uow, log, launcher, start = capped_world(slots)
    await start(command("r1"))
    with pytest.raises(RateLimited) as caught:
        await start(command("r2", user("u2", "again")))
    assert caught.value.code == "concurrency_limited"
    assert await guard.held(f"t:{TENANT}", "runs") == 1

    model: ChatModel = LoadTestChatModel(OfflineChatModel())
    if outcome != "finished":
        model = StuckModel(fail=outcome == "failed")
    job = launcher.launched[0]
    run = executor(uow, log, model, slots=slots)
    if outcome == "cancelled":
        task = asyncio.ensure_future(run(job))
        await model.streaming.wait()  # cancelled mid-run, not before it began
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await run(job)
    assert await guard.held(f"t:{TENANT}", "runs") == 0
    assert (await start(command("r3", user("u3", "now")))).run.id == "r3"


async def test_a_principal_cap_leaves_the_tenants_other_principals_free() -> None:
    _, _, launcher, start = capped_world(capped(MemoryConcurrencyGuard(), tenant=10, principal=1))
    await start(command("r1"))
    with pytest.raises(RateLimited):
        await start(command("r2", user("u2", "x")))
    colleague = Principal(
        tenant_id=TENANT, tenant_slug="demo", subject="apikey:other", role=KeyRole.MEMBER
    )
    await start(command("r3", user("u3", "y"), principal=colleague))
    assert [a.run_id for a in launcher.launched] == ["r1", "r3"]


@pytest.mark.parametrize(
    ("cmd", "error"),
    [
        (
            StartRunCommand(
                principal=ME,
                agent="ghost",
                thread_id="t",
                run_id="r",
                messages=[user("u", "x")],
                forwarded_props={},
            ),
            NotFound,
        ),
        (
            StartRunCommand(
                principal=ME,
                agent="assistant",
                thread_id="t",
                run_id="r",
                messages=[],
                forwarded_props={},
            ),
            InvalidInput,
        ),
        (
            StartRunCommand(
                principal=ME,
                agent="assistant",
                thread_id=" ",
                run_id="r",
                messages=[user("u", "x")],
                forwarded_props={},
            ),
            InvalidInput,
        ),
        (
            StartRunCommand(
                principal=Principal(
                    tenant_id=TENANT, tenant_slug="demo", subject="s", role=KeyRole.READONLY
                ),
                agent="assistant",
                thread_id="t",
                run_id="r",
                messages=[user("u", "x")],
                forwarded_props={},
            ),
            Forbidden,
        ),
    ],
)
async def test_invalid_starts_are_refused_and_leave_nothing(world, cmd, error) -> None:
    uow, log, launcher, start = world
    with pytest.raises(error):
        await start(cmd)
    assert not launcher.launched
    assert await log.read(TENANT, RunId("r"), after=0, wait_s=0) is None
    async with uow.transaction(TENANT) as tx:
        assert await tx.runs.get(TENANT, RunId("r")) is None


async def execute(world, model, run_id: str = "r1"):
    uow, log, launcher, start = world
    await start(command(run_id))
    await executor(uow, log, model)(launcher.launched[-1])
    return await all_events(log, run_id)


async def test_executing_streams_text_then_persists_then_finishes(world) -> None:
    events, complete = await execute(world, LoadTestChatModel(OfflineChatModel()))
    assert complete
    assert isinstance(events[0], RunStarted)
    kinds = [type(e) for e in events]
    assert kinds[1:5] == [StateSnapshot, StateDelta, StepStarted, TextMessageStarted]
    assert kinds[-3:-1] == [TextMessageEnded, StepFinished]
    assert isinstance(events[-1], RunFinished)
    text = "".join(e.delta for e in events if isinstance(e, TextDelta))
    uow = world[0]
    async with uow.transaction(TENANT) as tx:
        stored = await tx.threads.list_messages(TENANT, ThreadId("t1"))
        run = await tx.runs.get(TENANT, RunId("r1"))
    assert stored[-1].role is Role.ASSISTANT and stored[-1].content == text
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert run.usage == events[-1].usage and run.usage.output_tokens > 0


class BrokenModel:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield TextChunk("half ")
        yield UsageChunk(Usage(input_tokens=3))
        raise self.exc


async def test_a_model_error_ends_the_run_failed_with_its_code(world) -> None:
    events, complete = await execute(world, BrokenModel(ModelError("down", code="model_timeout")))
    assert complete and events[-1] == RunFailed(code="model_timeout", message="down")
    async with world[0].transaction(TENANT) as tx:
        run = await tx.runs.get(TENANT, RunId("r1"))
    assert run is not None and (run.status, run.error_code) == (RunStatus.FAILED, "model_timeout")
    assert run.usage.input_tokens == 3


async def test_a_bug_in_the_model_still_ends_the_stream_and_is_raised(world) -> None:
    with pytest.raises(ZeroDivisionError):
        await execute(world, BrokenModel(ZeroDivisionError()))
    events, complete = await all_events(world[1])
    assert complete and events[-1] == RunFailed(
        code="internal_error", message="the run failed unexpectedly"
    )


class EndlessModel:
    def __init__(self) -> None:
        self.streaming = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        while True:
            yield TextChunk("more ")
            self.streaming.set()
            await asyncio.sleep(3600)


async def test_cancelling_an_executing_run_ends_it_cancelled(world) -> None:
    uow, log, launcher, start = world
    await start(command())
    model = EndlessModel()
    task = asyncio.create_task(executor(uow, log, model)(launcher.launched[0]))
    await model.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events, complete = await all_events(log)
    assert complete and events[-1] == RunFailed(code="cancelled", message="the run was cancelled")
    async with uow.transaction(TENANT) as tx:
        run = await tx.runs.get(TENANT, RunId("r1"))
    assert run is not None and run.status is RunStatus.CANCELLED


async def test_cancel_use_case_refuses_finished_and_foreign_runs(world) -> None:
    uow, _, launcher, start = world
    await execute(world, OfflineChatModel())
    cancel = CancelRun(uow, launcher)
    with pytest.raises(Conflict):
        await cancel(ME, "r1")
    stranger = Principal(
        tenant_id=TenantId("ten_2"), tenant_slug="x", subject="s", role=KeyRole.ADMIN
    )
    with pytest.raises(NotFound):
        await cancel(stranger, "r1")
    await start(command("r2"))
    assert (await cancel(ME, "r2")).id == "r2"
    assert launcher.cancelled == ["r2"]


async def test_the_offline_model_is_deterministic_and_says_when_it_found_nothing() -> None:
    model = OfflineChatModel(knowledge=MemoryKnowledgeStore())
    request = ChatRequest(tenant_id=TENANT, messages=(user("u", "Where is my invoice?"),))
    first = await model.answer(request)
    assert first == await model.answer(request)
    assert "Where is my invoice?" in first
    assert "found nothing" in first


async def test_the_offline_model_answers_from_the_knowledge_base_with_citations() -> None:
    store = MemoryKnowledgeStore()
    d = KbDocument(
        id="refunds",
        tenant_id=TENANT,
        title="Refund policy",
        content="Customers may return products within 30 days for a full refund.",
        content_type=ContentType.MARKDOWN,
        source="kb://refunds",
    )
    await store.put(d, d.chunks())
    model = OfflineChatModel(knowledge=store)
    answer = await model.answer(
        ChatRequest(tenant_id=TENANT, messages=(user("u", "How do refunds work?"),))
    )
    assert "[1] Customers may return products within 30 days" in answer
    assert answer.endswith("Sources:\n[1] Refund policy (kb://refunds)")
    other = await model.answer(
        ChatRequest(tenant_id=TenantId("ten_2"), messages=(user("u", "refunds?"),))
    )
    assert "found nothing" in other


class ThreePiecesThenWaits:
    def __init__(self) -> None:
        self.streaming = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        for piece in ("one ", "two ", "three "):
            yield TextChunk(piece)
        self.streaming.set()
        await asyncio.sleep(3600)
        yield UsageChunk(Usage(input_tokens=1, output_tokens=1), "never")


async def test_a_cancelled_run_records_the_tokens_it_used_before_the_cancel(world) -> None:
    uow, log, launcher, start = world
    await start(command())
    model = ThreePiecesThenWaits()
    task = asyncio.create_task(executor(uow, log, model)(launcher.launched[0]))
    await model.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with uow.transaction(TENANT) as tx:
        run = await tx.runs.get(TENANT, RunId("r1"))
    assert run is not None and run.status is RunStatus.CANCELLED
    # The model never reported: three pieces streamed back, and the prompt was sent.
    assert run.usage.output_tokens == 3
    assert run.usage.input_tokens > 0
