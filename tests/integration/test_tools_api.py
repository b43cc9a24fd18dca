"""Tool calls through the whole path: the offline model, the registry, AG-UI frames."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from application.tools.ports import ToolAudit
from domain.tools.model import ToolOutcome
from tests.audit_support import tenant_trail
from tests.integration.test_http_api import (
    Api,
    make_api,
    official,
    parse_sse,
    run_body,
    types,
)


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_TOOLS__TENANTS='{"acme": ["kb_search"]}'):
        yield a


def text_of(frames) -> str:
    return "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")


def tool_results(frames) -> list[dict]:
    return [json.loads(d["content"]) for _, d in frames if d["type"] == "TOOL_CALL_RESULT"]


async def test_a_tool_run_streams_the_call_its_result_then_the_answer(api: Api) -> None:
    body = run_body(text='/tool kb_search {"query": "refund policy"}', protocolVersion="1.0.0")
    frames = parse_sse((await api.run(body)).text)
    for _, data in frames:
        official.validate_python(data)
    kinds = types(frames)
    call = kinds.index("TOOL_CALL_START")
    assert kinds[call + 1] == "TOOL_CALL_ARGS"
    end = kinds.index("TOOL_CALL_END")
    result = kinds.index("TOOL_CALL_RESULT")
    answer = kinds.index("TEXT_MESSAGE_START")
    assert call < end < result < answer
    assert kinds[-1] == "RUN_FINISHED"
    args = "".join(d["delta"] for _, d in frames if d["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"query": "refund policy"}
    found = tool_results(frames)[0]["results"]
    assert found[0]["documentId"] == "demo-refunds"
    assert "kb_search returned" in text_of(frames)
    stored = (await api.client.get("/v1/threads/t1/messages", headers=api.auth())).json()
    roles = [m["role"] for m in stored["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_malformed_arguments_come_back_to_the_model_as_an_error_result(api: Api) -> None:
    frames = parse_sse((await api.run(run_body(text='/tool kb_search {"limit": "many"}'))).text)
    result = tool_results(frames)[0]
    assert result["error"] == "invalid_arguments"
    assert types(frames)[-1] == "RUN_FINISHED"
    assert "invalid_arguments" in text_of(frames)


async def test_a_tool_outside_the_allowlist_is_refused_and_audited(api: Api) -> None:
    acme = await api.key_for("acme")
    body = run_body(text='/tool create_task {"title": "steal"}')
    frames = parse_sse((await api.run(body, key=acme)).text)
    assert tool_results(frames)[0]["error"] == "refused"
    audit = await api.container.get(ToolAudit)
    last = audit.entries[-1]
    assert (last.tool, last.outcome, last.run_id) == ("create_task", ToolOutcome.REFUSED, "r1")
    assert "steal" not in last.arguments_digest
    listed = (await api.client.get("/v1/tools", headers=api.auth(acme))).json()["tools"]
    assert [t["name"] for t in listed] == ["kb_search"]
    called = [e for e in await tenant_trail(api.container, "acme") if e.action == "tool.called"]
    assert [(e.details["tool"], e.details["outcome"], e.details["error"]) for e in called] == [
        ("create_task", "refused", "refused")
    ]
    assert "steal" not in repr(called)


async def test_an_agent_run_that_creates_a_task_is_on_the_tenants_audit_trail_in_order(
    api: Api,
) -> None:
    frames = parse_sse((await api.run(run_body(text="Create a task to call the supplier"))).text)
    assert types(frames)[-1] == "RUN_FINISHED"
    task_id = tool_results(frames)[0]["taskId"]
    call_id = next(d["toolCallId"] for _, d in frames if d["type"] == "TOOL_CALL_START")
    entries = await tenant_trail(api.container, "demo")
    started = [e.action for e in entries].index("run.started")
    # The task commits while the tool runs; the call itself is recorded with its outcome and
    # duration when the run's end (and the tool's result message) is stored.
    assert [(e.action, e.subject) for e in entries[started:]] == [
        ("run.started", "r1"),
        ("task.created", task_id),
        ("tool.called", call_id),
        ("run.finished", "r1"),
    ]
    _, task, call, finished = entries[started:]
    assert (task.actor, task.details["run"]) == ("agent:assistant", "r1")
    assert task.details["created_by"]  # the principal the agent acted for
    assert call.actor == "agent:assistant"
    assert {k: call.details[k] for k in ("tool", "run", "outcome")} == {
        "tool": "create_task",
        "run": "r1",
        "outcome": "ok",
    }
    assert int(call.details["duration_ms"]) >= 0
    assert finished.details["status"] == "succeeded"
    assert "supplier" not in repr(entries[started:]) and api.key not in repr(entries)


async def test_tasks_created_by_the_agent_are_kept_per_tenant(api: Api) -> None:
    frames = parse_sse((await api.run(run_body(text="Create a task to call the supplier"))).text)
    created = tool_results(frames)[0]
    assert created["title"] == "call the supplier"
    listed = parse_sse((await api.run(run_body("r2", text="Show my tasks"))).text)
    assert [t["title"] for t in tool_results(listed)[0]["tasks"]] == ["call the supplier"]
    other = await api.key_for("beta")
    theirs = parse_sse((await api.run(run_body("r3", text="show tasks"), key=other)).text)
    assert tool_results(theirs)[0]["tasks"] == []


async def test_the_tool_list_carries_json_schemas(api: Api) -> None:
    tools = {
        t["name"]: t
        for t in (await api.client.get("/v1/tools", headers=api.auth())).json()["tools"]
    }
    assert set(tools) == {
        "kb_search",
        "get_document",
        "create_task",
        "list_tasks",
        "render_document",
    }
    schema = tools["create_task"]["parameters"]
    assert schema["type"] == "object" and schema["required"] == ["title"]
    assert schema["additionalProperties"] is False


async def test_a_frontend_tool_round_trip_completes_across_two_runs(api: Api) -> None:
    confirm = {
        "name": "confirm_order",
        "description": "Ask the person to confirm",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    }
    first = await api.run(run_body(text='/tool confirm_order {"order": "A-17"}', tools=[confirm]))
    frames = parse_sse(first.text)
    kinds = types(frames)
    assert "TOOL_CALL_END" in kinds and "TOOL_CALL_RESULT" not in kinds
    assert kinds[-1] == "RUN_FINISHED"
    call_id = next(d["toolCallId"] for _, d in frames if d["type"] == "TOOL_CALL_START")
    history = [
        {"id": "u-r1", "role": "user", "content": '/tool confirm_order {"order": "A-17"}'},
        {
            "id": "a1",
            "role": "assistant",
            "toolCalls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "confirm_order", "arguments": '{"order": "A-17"}'},
                }
            ],
        },
        {"id": "tr1", "role": "tool", "toolCallId": call_id, "content": "confirmed by Ana"},
    ]
    second = await api.run(
        {"threadId": "t1", "runId": "r2", "messages": history, "tools": [confirm]}
    )
    answer = parse_sse(second.text)
    assert "confirm_order returned: confirmed by Ana" in text_of(answer)
    assert types(answer)[-1] == "RUN_FINISHED"


def apply_patch(doc, operations):
    """RFC 6902 add/replace, enough to check our deltas apply to what the client holds."""
    for op in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if op["op"] == "add":
                target.insert(len(target) if last == "-" else int(last), op["value"])
            else:
                assert op["op"] == "replace" and int(last) < len(target)
                target[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in target, f"replace of a missing path: {op}"
            target[last] = op["value"]
    return doc


async def test_agent_state_snapshot_and_deltas_apply_cleanly_and_keep_the_clients_state(
    api: Api,
) -> None:
    body = run_body(text='/tool kb_search {"query": "shipping"}', state={"cart": ["desk"]})
    frames = parse_sse((await api.run(body)).text)
    snapshots = [d["snapshot"] for _, d in frames if d["type"] == "STATE_SNAPSHOT"]
    assert snapshots == [{"cart": ["desk"], "sba": {"step": 0, "toolCalls": []}}]
    state = snapshots[0]
    for _, d in frames:
        if d["type"] == "STATE_DELTA":
            state = apply_patch(state, d["delta"])
    assert state["cart"] == ["desk"]
    assert state["sba"]["step"] == 2
    assert [(c["name"], c["status"]) for c in state["sba"]["toolCalls"]] == [("kb_search", "ok")]
