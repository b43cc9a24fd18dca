"""Our AG-UI encoding checked against the official ag-ui-protocol models (the oracle)."""

from __future__ import annotations

import json

import msgspec
import pytest
from ag_ui.core import EventType
from ag_ui.core import RunAgentInput as OfficialRunAgentInput
from ag_ui.core.events import Event as OfficialEvent
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

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
    ToolCallArgs,
    ToolCallEnded,
    ToolCallResult,
    ToolCallStarted,
)
from domain.conversation.model import Message, Role, ToolCall, Usage
from domain.ids import MessageId, RunId, ThreadId
from entrypoints.http.agui.encoder import encode_frame, encode_frames, messages_snapshot
from entrypoints.http.agui.models import RunAgentInput, run_input_decoder, text_of

official = TypeAdapter(OfficialEvent)

EVENTS = [
    RunStarted(thread_id=ThreadId("th"), run_id=RunId("r")),
    TextMessageStarted(message_id=MessageId("m")),
    TextDelta(MessageId("m"), 'héllo \u2603 "quoted"\n'),
    TextMessageEnded(message_id=MessageId("m")),
    RunFinished(
        thread_id=ThreadId("th"), run_id=RunId("r"), usage=Usage(input_tokens=3, output_tokens=4)
    ),
    RunFailed(code="model_error", message="provider down"),
    StepStarted(name="model"),
    ToolCallStarted(call_id="call_1", name="kb_search", parent_message_id=MessageId("m")),
    ToolCallArgs("call_1", '{"query": "ref'),
    ToolCallArgs("call_1", 'unds"}'),
    ToolCallEnded(call_id="call_1"),
    ToolCallResult(message_id=MessageId("tm1"), call_id="call_1", content='{"results": []}'),
    StepFinished(name="model"),
    StateSnapshot(snapshot={"cart": [], "sba": {"step": 0, "toolCalls": []}}),
    StateDelta(operations=({"op": "replace", "path": "/sba/step", "value": 1},)),
]


def frames(raw: bytes) -> list[tuple[int | None, dict]]:
    out = []
    assert raw.endswith(b"\n\n")
    for block in raw.decode().split("\n\n")[:-1]:
        seq, data = None, None
        for line in block.split("\n"):
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        assert data is not None
        out.append((seq, data))
    return out


@pytest.mark.parametrize("v1", [False, True])
def test_every_event_validates_against_the_official_models(v1: bool) -> None:
    raw = encode_frames(7, EVENTS, v1=v1)
    assert b"\r" not in raw
    decoded = frames(raw)
    assert [seq for seq, _ in decoded] == list(range(7, 7 + len(EVENTS)))
    for _, data in decoded:
        official.validate_python(data)
        assert None not in data.values(), "optional fields are omitted, never null"


def test_legacy_clients_get_no_outcome_and_v1_clients_do() -> None:
    end = EVENTS[4]
    ((_, legacy),) = frames(encode_frames(1, [end], v1=False))
    ((_, modern),) = frames(encode_frames(1, [end], v1=True))
    assert "outcome" not in legacy and "usage" not in legacy
    assert modern["outcome"] == {"type": "success"}
    assert modern["usage"][0]["totalTokens"] == 7
    assert official.validate_python(modern).type == EventType.RUN_FINISHED


def test_messages_snapshot_validates() -> None:
    snap = messages_snapshot(
        [
            Message(id=MessageId("u1"), role=Role.USER, content="hi"),
            Message(id=MessageId("a1"), role=Role.ASSISTANT, content="hello"),
            Message(
                id=MessageId("a2"),
                role=Role.ASSISTANT,
                content="",
                tool_calls=(ToolCall(id="c1", name="kb_search", arguments='{"query":"x"}'),),
            ),
            Message(id=MessageId("t1"), role=Role.TOOL, content="[]", tool_call_id="c1"),
        ]
    )
    ((_, data),) = frames(encode_frame(snap))
    official.validate_python(data)
    assert data["messages"][2]["toolCalls"][0]["function"]["name"] == "kb_search"
    assert "content" not in data["messages"][2]
    assert data["messages"][3]["toolCallId"] == "c1"


@given(st.text(min_size=1))
def test_any_text_delta_round_trips_through_the_official_model(text: str) -> None:
    ((_, data),) = frames(encode_frames(1, [TextDelta(MessageId("m"), text)], v1=True))
    assert official.validate_python(data).delta == text


FULL_INPUT = {
    "threadId": "t1",
    "runId": "r1",
    "parentRunId": "r0",
    "protocolVersion": "1.0.0",
    "state": {"cart": []},
    "messages": [
        {"id": "s", "role": "system", "content": "be brief"},
        {"id": "d", "role": "developer", "content": "dev"},
        {
            "id": "u",
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "url", "value": "https://x/y.png"}},
            ],
        },
        {
            "id": "a",
            "role": "assistant",
            "content": "ok",
            "toolCalls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"id": "tm", "role": "tool", "toolCallId": "c1", "content": "42"},
        {"id": "ac", "role": "activity", "activityType": "plan", "content": {"steps": []}},
        {"id": "re", "role": "reasoning", "content": "thinking"},
    ],
    "tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
    "context": [{"description": "page", "value": "/home"}],
    "forwardedProps": {"bench": {"tokens": 2}},
    "resume": [{"interruptId": "i1", "status": "resolved", "payload": {"ok": True}}],
}


def test_a_full_official_input_decodes() -> None:
    OfficialRunAgentInput.model_validate(FULL_INPUT)  # the oracle accepts it
    body = run_input_decoder.decode(json.dumps(FULL_INPUT))
    assert isinstance(body, RunAgentInput)
    assert [type(m).__name__ for m in body.messages][:3] == [
        "SystemMessageIn",
        "DeveloperMessageIn",
        "UserMessageIn",
    ]
    assert text_of(body.messages[2].content) == "look"


def test_minimal_input_from_the_legacy_client_decodes() -> None:
    body = run_input_decoder.decode(
        b'{"threadId":"t","runId":"r","state":{},"messages":[],"tools":[],"context":[],'
        b'"forwardedProps":{}}'
    )
    assert body.protocol_version is None


def test_unknown_top_level_field_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="threadID"):
        run_input_decoder.decode(b'{"threadId":"t","runId":"r","messages":[],"threadID":"x"}')


def test_unknown_message_role_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        run_input_decoder.decode(
            b'{"threadId":"t","runId":"r","messages":[{"id":"x","role":"robot","content":""}]}'
        )
