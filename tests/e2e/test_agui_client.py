"""The real @ag-ui/client (1.0 and the 0.0.59 that CopilotKit's runtime ships) accepts our
streams, and a run outlives its client's connection."""

from __future__ import annotations

import json
import subprocess
import uuid

import httpx
import pytest

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

CLIENTS = ["v1", "legacy"]
SLOW = json.dumps({"bench": {"tokens": 20, "delay_ms": 20}})


def drive(
    node: list[str], server: LiveServer, client: str, mode: str, url: str, **options: str
) -> dict:
    args = [*node, "--client", client, "--url", url, "--key", server.api_key, "--mode", mode]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", value]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the client: {done.stdout}\n{done.stderr}"
    result = json.loads(lines[-1])
    assert done.returncode == 0 and result["ok"], f"client rejected the stream: {result}"
    return result


def start_then_drop(server: LiveServer, thread: str, run: str) -> str:
    """Starts a slow run, reads its first line, and drops the connection mid-run."""
    body = {
        "threadId": thread,
        "runId": run,
        "forwardedProps": json.loads(SLOW),
        "messages": [{"id": f"u-{run}", "role": "user", "content": "hi"}],
    }
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/agents/assistant/runs",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        return next(response.iter_lines())


def assert_whole_run(result: dict, thread: str, run: str) -> None:
    events = result["events"]
    assert events[0] == "RUN_STARTED"
    assert events[-1] == "RUN_FINISHED"
    assert events.count("RUN_FINISHED") + events.count("RUN_ERROR") == 1
    assert (result["threadId"], result["runId"]) == (thread, run)
    assert (result["finishedThreadId"], result["finishedRunId"]) == (thread, run)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_accepts_a_plain_run(node, live_server: LiveServer, client: str) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    result = drive(
        node,
        live_server,
        client,
        "plain",
        f"{live_server.base_url}/v1/agents/assistant/runs",
        thread=thread,
        run=run,
        message="Hello from the client",
    )
    assert_whole_run(result, thread, run)
    assert "Hello from the client" in result["text"]
    assert result["messages"][-1]["role"] == "assistant"
    assert result["messages"][-1]["content"] == result["text"]


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_accepts_a_resumed_stream(node, live_server: LiveServer, client: str) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    original = drive(
        node,
        live_server,
        client,
        "plain",
        f"{live_server.base_url}/v1/agents/assistant/runs",
        thread=thread,
        run=run,
        forwarded_props=SLOW,
    )
    resumed = drive(
        node,
        live_server,
        client,
        "resume",
        f"{live_server.base_url}/v1/runs/{run}/events",
        thread=thread,
        run=run,
    )
    assert_whole_run(resumed, thread, run)
    assert resumed["events"] == original["events"]
    assert resumed["text"] == original["text"] == " ".join(f"tok{i}" for i in range(20))


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_accepts_a_stream_resumed_while_the_run_is_live(
    node, live_server: LiveServer, client: str
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    assert start_then_drop(live_server, thread, run) == "id: 1"
    resumed = drive(
        node,
        live_server,
        client,
        "resume",
        f"{live_server.base_url}/v1/runs/{run}/events",
        thread=thread,
        run=run,
    )
    assert_whole_run(resumed, thread, run)
    assert resumed["text"] == " ".join(f"tok{i}" for i in range(20))


def read_frames(lines) -> list[tuple[int | None, dict]]:
    frames, seq = [], None
    for line in lines:
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            frames.append((seq, json.loads(line[6:])))
            seq = None
    return frames


def test_a_disconnected_clients_run_still_finishes_and_is_persisted(
    live_server: LiveServer,
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    auth = {"Authorization": f"Bearer {live_server.api_key}"}
    assert start_then_drop(live_server, thread, run) == "id: 1"
    # Reconnect after the first event only: exactly the rest arrives, ending in RUN_FINISHED.
    with httpx.stream(
        "GET",
        f"{live_server.base_url}/v1/runs/{run}/events",
        headers={**auth, "Last-Event-ID": "1"},
        timeout=30,
    ) as response:
        frames = read_frames(response.iter_lines())
    assert [seq for seq, _ in frames] == list(range(2, 2 + len(frames)))
    assert frames[-1][1]["type"] == "RUN_FINISHED"
    stored = httpx.get(f"{live_server.base_url}/v1/threads/{thread}/messages", headers=auth)
    assert [m["role"] for m in stored.json()["messages"]] == ["user", "assistant"]
    assert stored.json()["messages"][1]["content"] == " ".join(f"tok{i}" for i in range(20))


def test_frames_use_lf_only_carry_ids_and_idle_streams_get_heartbeats(
    live_server: LiveServer,
) -> None:
    run = f"run-{uuid.uuid4()}"
    body = {
        "threadId": "th-raw",
        "runId": run,
        "forwardedProps": {"bench": {"tokens": 2, "delay_ms": 500}},
        "messages": [{"id": f"u-{run}", "role": "user", "content": "hi"}],
    }
    raw = httpx.post(
        f"{live_server.base_url}/v1/agents/assistant/runs",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {live_server.api_key}"},
    ).content
    assert b"\r" not in raw
    blocks = [b for b in raw.split(b"\n\n") if b]
    # The server's heartbeat is 0.2 s here, and the model pauses 0.5 s between its tokens.
    assert b": ping" in blocks
    ids = [int(b.split(b"\n")[0][4:]) for b in blocks if b.startswith(b"id: ")]
    assert ids == list(range(1, len(ids) + 1))
    assert all(b.startswith((b"id: ", b": ")) for b in blocks)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_accepts_a_run_with_a_backend_tool_call(
    node, live_server: LiveServer, client: str
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    result = drive(
        node,
        live_server,
        client,
        "plain",
        f"{live_server.base_url}/v1/agents/assistant/runs",
        thread=thread,
        run=run,
        message='/tool kb_search {"query": "shipping"}',
    )
    assert_whole_run(result, thread, run)
    kinds = result["events"]
    assert kinds.index("TOOL_CALL_START") < kinds.index("TOOL_CALL_END")
    assert kinds.index("TOOL_CALL_END") < kinds.index("TOOL_CALL_RESULT")
    assert "kb_search returned" in result["text"]


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_completes_a_frontend_tool_round_trip(
    node, live_server: LiveServer, client: str
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    tools = json.dumps(
        [
            {
                "name": "confirm_order",
                "description": "Ask to confirm",
                "parameters": {"type": "object", "properties": {}},
            }
        ]
    )
    result = drive(
        node,
        live_server,
        client,
        "frontend",
        f"{live_server.base_url}/v1/agents/assistant/runs",
        thread=thread,
        run=run,
        message='/tool confirm_order {"order": "A-17"}',
        tools=tools,
        result="confirmed by Ana",
    )
    assert result["events"][0] == "RUN_STARTED" and result["events"][-1] == "RUN_FINISHED"
    assert "confirm_order returned: confirmed by Ana" in result["text"]


def test_delete_cancels_a_live_run_whose_stream_then_ends_with_run_error(
    live_server: LiveServer,
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    auth = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "threadId": thread,
        "runId": run,
        "forwardedProps": {"bench": {"tokens": 200, "delay_ms": 50}},
        "messages": [{"id": f"u-{run}", "role": "user", "content": "hi"}],
    }
    with httpx.stream(
        "POST",
        f"{live_server.base_url}/v1/agents/assistant/runs",
        json=body,
        headers=auth,
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        assert next(lines) == "id: 1"
        cancel = httpx.delete(f"{live_server.base_url}/v1/runs/{run}", headers=auth)
        assert cancel.status_code == 202
        frames = read_frames(lines)
    assert frames[-1][1] == {
        "type": "RUN_ERROR",
        "message": "the run was cancelled",
        "code": "cancelled",
    }
    stored = httpx.get(f"{live_server.base_url}/v1/runs/{run}", headers=auth).json()
    assert stored["status"] == "cancelled"
    again = httpx.delete(f"{live_server.base_url}/v1/runs/{run}", headers=auth)
    assert again.status_code == 409
