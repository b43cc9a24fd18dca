"""The agent loop with a scripted model: tools run, results return, the loop stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.tools import MemoryToolAudit, StaticToolPolicy
from application.conversation.ports import (
    ChatChunk,
    ChatRequest,
    TextChunk,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
)
from application.conversation.use_cases import _Pieces
from application.tools.ports import ToolContext, ToolResult
from application.tools.use_cases import InvokeTool
from domain.conversation.events import RunFailed, RunFinished, ToolCallResult
from domain.conversation.model import Role
from domain.ids import RunId, TenantId
from domain.tools.model import ToolOutcome
from tests.support import builtin_tools
from tests.unit.test_run_use_cases import TENANT, FixedClock, command, executor
from tests.unit.test_run_use_cases import world as world


class ScriptedModel:
    """Calls the tools of its script in its first turn, then answers with what it was told."""

    def __init__(self, calls: list[tuple[str, str]], *, forever: bool = False) -> None:
        self.calls = calls
        self.forever = forever
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.requests.append(request)
        if self.forever or request.messages[-1].role is Role.USER:
            for i, (name, args) in enumerate(self.calls):
                call_id = f"c{len(self.requests)}_{i}"
                yield ToolCallStarted(call_id, name)
                yield ToolCallDelta(call_id, args[:5])
                yield ToolCallDelta(call_id, args[5:])
                yield ToolCallEnded(call_id)
            return
        yield TextChunk(f"done after {len(request.messages)} messages")


async def run_with(world, model, **kw):
    uow, log, launcher, start = world
    await start(command())
    await executor(uow, log, model, **kw)(launcher.launched[-1])
    batch = await log.read(TENANT, RunId("r1"), after=0, wait_s=0)
    assert batch is not None
    return list(batch.events)


async def test_several_tool_calls_run_and_their_results_go_back_to_the_model(world) -> None:
    model = ScriptedModel([("list_tasks", "{}"), ("kb_search", '{"query": "x"}')])
    events = await run_with(world, model)
    results = [e for e in events if isinstance(e, ToolCallResult)]
    assert [json.loads(r.content) for r in results] == [{"tasks": []}, {"results": []}]
    second = model.requests[1].messages
    assert [m.role for m in second[-3:]] == [Role.ASSISTANT, Role.TOOL, Role.TOOL]
    assert [c.arguments for c in second[-3].tool_calls] == ["{}", '{"query": "x"}']
    assert isinstance(events[-1], RunFinished)
    assert [t.name for t in model.requests[0].tools][:2] == ["kb_search", "get_document"]


async def test_the_loop_fails_with_step_limit_when_the_model_never_stops(world) -> None:
    events = await run_with(world, ScriptedModel([("list_tasks", "{}")], forever=True), max_steps=3)
    assert events[-1] == RunFailed(
        code="step_limit", message="the agent did not finish within 3 steps"
    )


async def test_invalid_arguments_are_a_result_not_a_crash(world) -> None:
    model = ScriptedModel([("create_task", '{"title": 42}')])
    events = await run_with(world, model)
    result = next(e for e in events if isinstance(e, ToolCallResult))
    assert json.loads(result.content)["error"] == "invalid_arguments"
    assert isinstance(events[-1], RunFinished)


class SlowRegistry:
    def specs(self):
        return []

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_tool_that_overruns_its_timeout_times_out_and_is_audited() -> None:
    audit = MemoryToolAudit()
    invoke = InvokeTool(
        SlowRegistry(), StaticToolPolicy(["*"], {}), audit, FixedClock(), timeout_s=0.01
    )
    ctx = ToolContext(tenant_id=TenantId("t"), tenant_slug="t", subject="s", run_id="r")
    result = await invoke(ctx, "slow", "{}")
    assert result.outcome is ToolOutcome.TIMED_OUT
    assert audit.entries[-1].outcome is ToolOutcome.TIMED_OUT


async def test_an_unknown_tool_is_reported_to_the_model() -> None:
    clock = FixedClock()
    registry = builtin_tools(clock)
    ctx = ToolContext(tenant_id=TenantId("t"), tenant_slug="t", subject="s", run_id="r")
    result = await registry.run("teleport", "{}", ctx)
    assert result.outcome is ToolOutcome.UNKNOWN_TOOL


async def test_the_audit_keeps_a_latency_histogram_per_tool() -> None:
    audit = MemoryToolAudit()
    clock = FixedClock()
    registry = builtin_tools(clock)
    invoke = InvokeTool(registry, StaticToolPolicy(["*"], {}), audit, clock)
    ctx = ToolContext(tenant_id=TenantId("t"), tenant_slug="t", subject="s", run_id="r")
    for _ in range(3):
        await invoke(ctx, "list_tasks", "{}")
    histogram = audit.latency_histogram("list_tasks")
    assert histogram["+Inf"] == 3
    counts = list(histogram.values())
    assert counts == sorted(counts), "cumulative buckets never decrease"
    assert audit.latency_histogram("kb_search")["+Inf"] == 0


@given(st.lists(st.text(max_size=12), max_size=80))
def test_streamed_text_is_kept_whole_and_in_order(deltas: list[str]) -> None:
    pieces = _Pieces()
    for delta in deltas:
        pieces.append(delta)
    assert pieces.text() == "".join(deltas)
    assert bool(pieces) == bool(deltas)
