"""The real @ag-ui/client (1.0 and the 0.0.59 that CopilotKit's runtime ships) accepts our
streams, and a run outlives its client's connection."""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from collections.abc import Iterator

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
    # The 1.0 client only warns when it drops an event type or strips a field it does not know.
    assert result["warnings"] == [], f"the client dropped or could not apply: {result}"
    return result


def start_then_drop(server: LiveServer, thread: str, run: str) -> tuple[int | None, dict]:
    """Starts a slow run, reads its first frame, and drops the connection mid-run."""
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
        return next(iter_frames(response.iter_lines()))


def iter_frames(lines: Iterator[str]) -> Iterator[tuple[int | None, dict]]:
    """(id, event) for each data frame, as soon as its blank line arrives; comments skipped."""
    seq, data = None, None
    for line in lines:
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "":
            if data is not None:
                yield seq, data
            seq, data = None, None


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
    assert result["text"]
    assert result["messages"][-1] == {"role": "assistant", "content": result["text"]}
    # The two generations really differ on the wire: only 1.0 declares its protocol version.
    assert result["sentProtocolVersion"] == ("1.0" if client == "v1" else None)


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
    seq, first = start_then_drop(live_server, thread, run)
    assert (seq, first["type"]) == (1, "RUN_STARTED")
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


def test_a_disconnected_clients_run_still_finishes_and_is_persisted(
    live_server: LiveServer,
) -> None:
    thread, run = f"th-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    auth = {"Authorization": f"Bearer {live_server.api_key}"}
    seq, first = start_then_drop(live_server, thread, run)
    assert (seq, first["type"]) == (1, "RUN_STARTED")
    # Reconnect after the first event only: exactly the rest arrives, ending in RUN_FINISHED.
    with httpx.stream(
        "GET",
        f"{live_server.base_url}/v1/runs/{run}/events",
        headers={**auth, "Last-Event-ID": "1"},
        timeout=30,
    ) as response:
        frames = list(iter_frames(response.iter_lines()))
    assert [seq for seq, _ in frames] == list(range(2, 2 + len(frames)))
    kinds = [event["type"] for _, event in frames]
    assert kinds[-1] == "RUN_FINISHED"
    assert kinds.count("RUN_FINISHED") + kinds.count("RUN_ERROR") == 1
    assert (frames[-1][1]["threadId"], frames[-1][1]["runId"]) == (thread, run)
    stored = httpx.get(f"{live_server.base_url}/v1/threads/{thread}/messages", headers=auth)
    assert stored.status_code == 200
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == " ".join(f"tok{i}" for i in range(20))


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
    assert raw.endswith(b"\n\n")
    blocks = raw[:-2].split(b"\n\n")
    # The server's heartbeat is 0.2 s here, and the model pauses 0.5 s between its tokens.
    assert b": ping" in blocks
    ids, kinds = [], []
    for block in blocks:
        lines = block.split(b"\n")
        if all(line.startswith(b":") for line in lines):
            continue  # a comment frame (heartbeat)
        assert len(lines) == 2, block
        assert lines[0].startswith(b"id: ") and lines[1].startswith(b"data: "), block
        ids.append(int(lines[0][4:]))
        kinds.append(json.loads(lines[1][6:])["type"])
    assert ids and all(a < b for a, b in itertools.pairwise(ids)), ids
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED", kinds


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
        stream = iter_frames(response.iter_lines())
        seq, first = next(stream)
        assert (seq, first["type"]) == (1, "RUN_STARTED")
        cancel = httpx.delete(f"{live_server.base_url}/v1/runs/{run}", headers=auth)
        assert cancel.status_code == 202
        frames = list(stream)
    assert frames[-1][1] == {
        "type": "RUN_ERROR",
        "message": "the run was cancelled",
        "code": "cancelled",
    }
    stored = httpx.get(f"{live_server.base_url}/v1/runs/{run}", headers=auth).json()
    assert stored["status"] == "cancelled"
    again = httpx.delete(f"{live_server.base_url}/v1/runs/{run}", headers=auth)
    assert again.status_code == 409
