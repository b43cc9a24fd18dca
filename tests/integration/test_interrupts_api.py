"""Human in the loop: a tool that needs approval ends the run with an interrupt; the next run
answers it in resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.audit_support import tenant_trail
from tests.integration.test_http_api import (
    Api,
    assert_problem,
    make_api,
    official,
    parse_sse,
    run_body,
    types,
)

ASK = '/tool create_task {"title": "Order 40 chairs"}'


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_TOOLS__APPROVAL='["create_task"]'):
        yield a


def results(frames) -> list[dict]:
    return [json.loads(d["content"]) for _, d in frames if d["type"] == "TOOL_CALL_RESULT"]


async def interrupted(api: Api) -> tuple[list, dict, list]:
    frames = parse_sse((await api.run(run_body(text=ASK, protocolVersion="1.0.0"))).text)
    for _, data in frames:
        official.validate_python(data)
    finished = frames[-1][1]
    assert finished["type"] == "RUN_FINISHED"
    call = next(d for _, d in frames if d["type"] == "TOOL_CALL_START")
    args = "".join(d["delta"] for _, d in frames if d["type"] == "TOOL_CALL_ARGS")
    history = [
        {"id": "u-r1", "role": "user", "content": ASK},
        {
            "id": call["parentMessageId"],
            "role": "assistant",
            "toolCalls": [
                {
                    "id": call["toolCallId"],
                    "type": "function",
                    "function": {"name": "create_task", "arguments": args},
                }
            ],
        },
    ]
    return frames, finished, history


def answer(finished: dict, history: list, status: str) -> dict:
    """The next run's body: the history the client holds and its answer to the interrupt."""
    interrupt_id = finished["outcome"]["interrupts"][0]["id"]
    return {
        "threadId": "t1",
        "runId": "r2",
        "protocolVersion": "1.0.0",
        "messages": history,
        "resume": [{"interruptId": interrupt_id, "status": status}],
    }


async def test_a_tool_needing_approval_ends_the_run_with_an_interrupt(api: Api) -> None:
    frames, finished, _ = await interrupted(api)
    assert "TOOL_CALL_RESULT" not in types(frames)
    outcome = finished["outcome"]
    assert outcome["type"] == "interrupt"
    (interrupt,) = outcome["interrupts"]
    assert interrupt["reason"] == "tool_approval"
    assert interrupt["toolCallId"] == next(
        d["toolCallId"] for _, d in frames if d["type"] == "TOOL_CALL_START"
    )
    assert interrupt["expiresAt"].endswith("Z")


async def test_an_approved_interrupt_runs_the_tool_in_the_next_run(api: Api) -> None:
    _, finished, history = await interrupted(api)
    body = answer(finished, history, "resolved")
    frames = parse_sse((await api.run(body)).text)
    assert results(frames)[0]["title"] == "Order 40 chairs"
    assert frames[-1][1]["outcome"] == {"type": "success"}
    again = await api.run({**body, "runId": "r3"})
    assert_problem(again, 422, "invalid_input")
    entries = await tenant_trail(api.container, "demo")
    interrupt_id = finished["outcome"]["interrupts"][0]["id"]
    about = [e for e in entries if e.subject == interrupt_id]
    assert [(e.action, e.actor) for e in about] == [
        ("interrupt.opened", "agent:assistant"),
        ("interrupt.resolved", about[1].actor),
    ]
    assert about[1].actor.startswith("apikey:") and about[1].details["outcome"] == "resolved"
    # The second run starts, closes the interrupt, then runs the approved call: the task is
    # created while the tool runs, the call is recorded with the run's end.
    second = [(e.action, e.subject) for e in entries[-5:]]
    assert [action for action, _ in second] == [
        "run.started",
        "interrupt.resolved",
        "task.created",
        "tool.called",
        "run.finished",
    ]
    assert second[0] == ("run.started", "r2") and second[3][1] == history[1]["toolCalls"][0]["id"]


async def test_a_declined_interrupt_tells_the_model_and_runs_nothing(api: Api) -> None:
    _, finished, history = await interrupted(api)
    body = answer(finished, history, "cancelled")
    frames = parse_sse((await api.run(body)).text)
    assert results(frames)[0]["error"] == "refused"
    listed = parse_sse((await api.run(run_body("r3", "t9", "show tasks"))).text)
    assert results(listed)[0]["tasks"] == []
    entries = await tenant_trail(api.container, "demo")
    resolved = [e for e in entries if e.action == "interrupt.resolved"]
    assert [e.details["outcome"] for e in resolved] == ["cancelled"]
    assert "task.created" not in [e.action for e in entries]


async def test_a_run_that_ignores_an_open_interrupt_is_refused(api: Api) -> None:
    _, _, history = await interrupted(api)
    body = {
        "threadId": "t1",
        "runId": "r2",
        "protocolVersion": "1.0.0",
        "messages": [*history, {"id": "u2", "role": "user", "content": "and now?"}],
    }
    assert_problem(await api.run(body), 409, "conflict")


async def test_an_expired_interrupt_is_refused(tmp_path) -> None:
    async for api in make_api(
        tmp_path, SBA_TOOLS__APPROVAL='["create_task"]', SBA_TOOLS__APPROVAL_TTL_S="0"
    ):
        _, finished, history = await interrupted(api)
        body = answer(finished, history, "resolved")
        interrupt_id = body["resume"][0]["interruptId"]
        problem = assert_problem(await api.run(body), 422, "interrupt_expired")
        assert interrupt_id in problem["detail"]


async def test_a_client_without_interrupt_support_gets_a_refusal_the_model_can_read(
    api: Api,
) -> None:
    frames = parse_sse((await api.run(run_body(text=ASK))).text)
    assert results(frames)[0]["error"] == "refused"
    assert "approval" in results(frames)[0]["message"]
    assert "outcome" not in frames[-1][1]


async def test_frontend_tool_calls_are_listed_as_pending_for_v1_clients(api: Api) -> None:
    confirm = {"name": "confirm_order", "description": "Ask", "parameters": {}}
    frames = parse_sse(
        (
            await api.run(
                run_body(text="/tool confirm_order {}", tools=[confirm], protocolVersion="1.0.0")
            )
        ).text
    )
    call_id = next(d["toolCallId"] for _, d in frames if d["type"] == "TOOL_CALL_START")
    assert frames[-1][1]["outcome"] == {"type": "success", "pendingToolCallIds": [call_id]}
    official.validate_python(frames[-1][1])


async def test_a_client_resuming_through_get_receives_the_interrupt_and_can_answer_it(
    api: Api,
) -> None:
    frames, finished, history = await interrupted(api)
    resumed = parse_sse((await api.client.get("/v1/runs/r1/events", headers=api.auth())).text)
    for _, data in resumed:
        official.validate_python(data)
    assert resumed[-1][1]["outcome"] == finished["outcome"]
    after = {**api.auth(), "Last-Event-ID": str(frames[1][0])}
    rest = parse_sse((await api.client.get("/v1/runs/r1/events", headers=after)).text)
    assert rest[-1][1]["outcome"]["type"] == "interrupt"
    # The outcome the resumed stream carried is enough to answer the approval.
    done = parse_sse((await api.run(answer(resumed[-1][1], history, "resolved"))).text)
    assert results(done)[0]["title"] == "Order 40 chairs"
    assert done[-1][1]["outcome"] == {"type": "success"}


async def test_after_the_live_log_expired_a_resume_still_carries_the_interrupt(tmp_path) -> None:
    async for api in make_api(
        tmp_path, SBA_TOOLS__APPROVAL='["create_task"]', SBA_RUNS__MAX_FINISHED_RUNS="1"
    ):
        _, finished, history = await interrupted(api)
        # Another run pushes the first one's live log out: its stream is rebuilt from the store.
        assert (await api.run(run_body("other", "t-other", "hello"))).status_code == 200
        replay = parse_sse((await api.client.get("/v1/runs/r1/events", headers=api.auth())).text)
        assert types(replay) == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
        for _, data in replay:
            official.validate_python(data)
        assert replay[-1][1]["outcome"] == finished["outcome"]
        done = parse_sse((await api.run(answer(replay[-1][1], history, "resolved"))).text)
        assert results(done)[0]["title"] == "Order 40 chairs"
