"""AnthropicChatModel against a fake Messages API over real HTTP.

The stream fixtures reproduce the examples in Anthropic's "Streaming Messages" documentation:
the "Basic streaming request" event sequence (message_start → content_block_start → ping →
content_block_delta… → content_block_stop → message_delta → message_stop), the "Streaming
request with tool use" example (a text block, then a tool_use block whose input arrives as
``input_json_delta`` pieces), and the "Error events" example (``overloaded_error``). Error
bodies follow the "Errors" page: ``{"type": "error", "error": {"type", "message"}}``."""

from __future__ import annotations

import json

import httpx
import pytest

from adapters.llm.anthropic import AnthropicChatModel
from adapters.llm.http import HttpRetryPolicy
from application.conversation.ports import (
    TextChunk,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
    ToolSpec,
    UsageChunk,
)
from domain.conversation.model import Role, Usage
from tests.llm.conftest import (
    FakeProvider,
    Reply,
    call,
    collect,
    collect_until_error,
    json_reply,
    msg,
    request,
    sse,
    stream_reply,
)

KEY = "sk-ant-api03-Sup3rS3cretAnthropicKey-0123456789"


def event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}"


MESSAGE_START = event(
    "message_start",
    '{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", '
    '"type": "message", "role": "assistant", "content": [], '
    '"model": "claude-3-5-sonnet-20241022", "stop_reason": null, "stop_sequence": null, '
    '"usage": {"input_tokens": 25, "output_tokens": 1}}}',
)
PING = event("ping", '{"type": "ping"}')


def text_delta(index: int, text: str) -> str:
    return event(
        "content_block_delta",
        json.dumps(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": text},
            }
        ),
    )


def json_delta(index: int, partial: str) -> str:
    return event(
        "content_block_delta",
        json.dumps(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": partial},
            }
        ),
    )


def block_start(index: int, block: str) -> str:
    return event(
        "content_block_start",
        f'{{"type": "content_block_start", "index": {index}, "content_block": {block}}}',
    )


def block_stop(index: int) -> str:
    return event("content_block_stop", f'{{"type": "content_block_stop", "index": {index}}}')


def message_delta(stop_reason: str, output_tokens: int) -> str:
    return event(
        "message_delta",
        f'{{"type": "message_delta", "delta": {{"stop_reason": "{stop_reason}", '
        f'"stop_sequence": null}}, "usage": {{"output_tokens": {output_tokens}}}}}',
    )


MESSAGE_STOP = event("message_stop", '{"type": "message_stop"}')
OVERLOADED = event(
    "error", '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
)

# "Basic streaming request".
TEXT_STREAM = sse(
    MESSAGE_START,
    block_start(0, '{"type": "text", "text": ""}'),
    PING,
    text_delta(0, "Hello"),
    text_delta(0, "!"),
    block_stop(0),
    message_delta("end_turn", 15),
    MESSAGE_STOP,
)

# "Streaming request with tool use" (get_weather in San Francisco), abridged.
TOOL_STREAM = sse(
    event(
        "message_start",
        '{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
        '"role":"assistant","model":"claude-3-haiku-20240307","stop_sequence":null,'
        '"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}',
    ),
    block_start(0, '{"type":"text","text":""}'),
    PING,
    text_delta(0, "Okay"),
    text_delta(0, ", let's check the weather for San Francisco, CA:"),
    block_stop(0),
    block_start(
        1,
        '{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}',
    ),
    json_delta(1, ""),
    json_delta(1, '{"location":'),
    json_delta(1, ' "San'),
    json_delta(1, " Francisc"),
    json_delta(1, "o,"),
    json_delta(1, ' CA"'),
    json_delta(1, ', "unit": "fah'),
    json_delta(1, 'renheit"}'),
    block_stop(1),
    message_delta("tool_use", 89),
    MESSAGE_STOP,
)


def error_body(type_: str, message: str) -> dict:
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


UNAUTHORIZED = json_reply(401, error_body("authentication_error", "invalid x-api-key"))
BAD_REQUEST = json_reply(400, error_body("invalid_request_error", "max_tokens: Field required"))
RATE_LIMITED = json_reply(
    429,
    error_body(
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
    ),
    headers={"retry-after": "3"},
)
SERVER_ERROR = json_reply(500, error_body("api_error", "Internal server error"))
OVERLOADED_STATUS = json_reply(529, error_body("overloaded_error", "Overloaded"))


def model(
    fake: FakeProvider, client: httpx.AsyncClient, retry: HttpRetryPolicy, **kw
) -> AnthropicChatModel:
    return AnthropicChatModel(
        client,
        base_url=fake.url,
        api_key=KEY,
        model="claude-3-5-sonnet-20241022",
        retry=retry,
        **kw,
    )


async def test_text_stream_yields_text_then_usage(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hello"))))

    assert got == [
        TextChunk("Hello"),
        TextChunk("!"),
        UsageChunk(Usage(input_tokens=25, output_tokens=15)),
    ]


async def test_request_carries_headers_model_max_tokens_and_stream_flag(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    await collect(
        model(fake, client, retry, max_tokens=256).stream(request(msg(1, Role.USER, "Hello")))
    )

    [received] = fake.requests
    assert (received.method, received.path) == ("POST", "/v1/messages")
    assert received.headers["x-api-key"] == KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["content-type"] == "application/json"
    assert "authorization" not in received.headers
    assert received.json() == {
        "model": "claude-3-5-sonnet-20241022",
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": "Hello"}],
    }


async def test_request_model_overrides_the_configured_one(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    await collect(
        model(fake, client, retry).stream(request(msg(1, Role.USER), model="claude-3-haiku"))
    )

    assert fake.requests[0].json()["model"] == "claude-3-haiku"


async def test_system_tool_calls_and_results_map_to_messages_api_shapes(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))
    weather = ToolSpec(
        name="get_weather",
        description="Get the current weather in a given location",
        parameters={
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    )
    conversation = request(
        msg(1, Role.SYSTEM, "You are a weather bot."),
        msg(2, Role.USER, "Weather in SF and NYC?"),
        msg(3, Role.DEVELOPER, "Prefer Fahrenheit."),
        msg(
            4,
            Role.ASSISTANT,
            "Let me check.",
            tool_calls=(
                call("toolu_a", "get_weather", '{"location": "San Francisco, CA"}'),
                call("toolu_b", "get_weather", '{"location": "New York, NY", "unit": "f"}'),
            ),
        ),
        msg(5, Role.TOOL, "65 degrees", tool_call_id="toolu_a"),
        msg(6, Role.TOOL, "48 degrees", tool_call_id="toolu_b"),
        msg(7, Role.ASSISTANT, "SF 65°F, NYC 48°F."),
        msg(8, Role.USER, "Thanks"),
        tools=(weather,),
    )

    await collect(model(fake, client, retry).stream(conversation))

    body = fake.requests[0].json()
    assert body["system"] == "You are a weather bot.\n\nPrefer Fahrenheit."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in SF and NYC?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_b",
                    "name": "get_weather",
                    "input": {"location": "New York, NY", "unit": "f"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "65 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "48 degrees"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "SF 65°F, NYC 48°F."}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": weather.parameters,
        }
    ]


async def test_text_after_tool_results_joins_their_user_turn(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))
    conversation = request(
        msg(1, Role.USER, "Go"),
        msg(2, Role.ASSISTANT, tool_calls=(call("toolu_a", "ping", ""),)),
        msg(3, Role.TOOL, "pong", tool_call_id="toolu_a"),
        msg(4, Role.USER, "And now?"),
    )

    await collect(model(fake, client, retry).stream(conversation))

    messages = fake.requests[0].json()["messages"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "toolu_a", "name": "ping", "input": {}}
    ]
    assert messages[2:] == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "pong"},
                {"type": "text", "text": "And now?"},
            ],
        }
    ]


async def test_tool_use_stream_yields_the_call_with_reassembled_input(fake, client, retry):
    fake.script(stream_reply(TOOL_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "SF?"))))

    call_id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert got[:3] == [
        TextChunk("Okay"),
        TextChunk(", let's check the weather for San Francisco, CA:"),
        ToolCallStarted(call_id, "get_weather"),
    ]
    assert got[-2:] == [
        ToolCallEnded(call_id),
        UsageChunk(Usage(input_tokens=472, output_tokens=89)),
    ]
    pieces = got[3:-2]
    assert len(pieces) == 7  # the empty first partial_json is not passed on
    assert all(isinstance(p, ToolCallDelta) and p.call_id == call_id for p in pieces)
    arguments = "".join(p.delta for p in pieces if isinstance(p, ToolCallDelta))
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


async def test_a_tool_call_without_parameters_gets_empty_object_arguments(fake, client, retry):
    fake.script(
        stream_reply(
            sse(
                MESSAGE_START,
                block_start(0, '{"type":"tool_use","id":"toolu_x","name":"now","input":{}}'),
                json_delta(0, ""),
                block_stop(0),
                message_delta("tool_use", 5),
                MESSAGE_STOP,
            )
        )
    )

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER))))

    assert got[:3] == [
        ToolCallStarted("toolu_x", "now"),
        ToolCallDelta("toolu_x", "{}"),
        ToolCallEnded("toolu_x"),
    ]


async def test_an_overloaded_error_event_after_text_fails_unavailable_without_retry(
    fake, client, retry, sleeps
):
    fake.script(stream_reply(TEXT_STREAM[:4] + sse(OVERLOADED)), stream_reply(TEXT_STREAM))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello")]
    assert error.code == "model_unavailable"
    assert "anthropic" in error.message
    assert "overloaded_error" in error.message
    assert "Overloaded" in error.message
    assert len(fake.requests) == 1
    assert sleeps.delays == []


async def test_an_overloaded_error_event_before_any_chunk_is_retried(fake, client, retry):
    fake.script(stream_reply(sse(MESSAGE_START, PING, OVERLOADED)), stream_reply(TEXT_STREAM))

    got = await collect(model(fake, client, retry).stream(request()))

    assert len(fake.requests) == 2
    assert got[0] == TextChunk("Hello")


async def test_rate_limit_and_overload_are_retried_with_retry_after_and_jitter(
    fake, client, retry, sleeps
):
    fake.script(RATE_LIMITED, OVERLOADED_STATUS, stream_reply(TEXT_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"))))

    assert len(fake.requests) == 3
    assert got[-1] == UsageChunk(Usage(input_tokens=25, output_tokens=15))
    # Retry-After: 3 capped at max_delay_s (1.0); then full jitter's bound base * 2**1.
    assert sleeps.delays == [1.0, 0.2]


@pytest.mark.parametrize(
    ("reply", "code", "provider_text"),
    [
        (UNAUTHORIZED, "model_auth", "invalid x-api-key"),
        (
            json_reply(
                403,
                error_body("permission_error", "Your API key does not have permission"),
            ),
            "model_auth",
            "does not have permission",
        ),
        (BAD_REQUEST, "model_bad_request", "max_tokens: Field required"),
        (
            json_reply(404, error_body("not_found_error", "model: claude-imaginary")),
            "model_bad_request",
            "claude-imaginary",
        ),
        (RATE_LIMITED, "model_rate_limited", "exceed the rate limit"),
        (SERVER_ERROR, "model_unavailable", "Internal server error"),
        (OVERLOADED_STATUS, "model_unavailable", "Overloaded"),
    ],
)
async def test_error_status_maps_to_code_with_provider_message_and_no_key(
    fake, client, reply: Reply, code: str, provider_text: str
):
    fake.script(reply)

    got, error = await collect_until_error(
        model(fake, client, HttpRetryPolicy(max_attempts=1)).stream(request(msg(1, Role.USER)))
    )

    assert got == []
    assert error.code == code
    assert error.message.startswith(f"anthropic answered HTTP {reply.status}")
    assert provider_text in error.message
    assert KEY not in error.message


async def test_a_stream_cut_before_message_stop_is_unavailable(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM[:5], then="cut"))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello"), TextChunk("!")]
    assert error.code == "model_unavailable"
    assert len(fake.requests) == 1


async def test_a_provider_that_never_answers_times_out(fake):
    fake.script(Reply(hang=True))

    async with httpx.AsyncClient(timeout=httpx.Timeout(0.05)) as impatient:
        chat = model(fake, impatient, HttpRetryPolicy(max_attempts=1))
        _, error = await collect_until_error(chat.stream(request()))

    assert error.code == "model_timeout"
    assert "anthropic timed out" in error.message


@pytest.mark.parametrize(
    "bad",
    [
        event("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": '),
        event("content_block_delta", '{"index": 0}'),
        event(
            "message_delta",
            '{"type": "message_delta", "delta": {}, "usage": {"output_tokens": "many"}}',
        ),
    ],
)
async def test_a_malformed_event_is_a_bad_response_and_not_retried(fake, client, retry, bad):
    fake.script(stream_reply(TEXT_STREAM[:4] + sse(bad) + TEXT_STREAM[4:]))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello")]
    assert error.code == "model_bad_response"
    assert "anthropic sent a malformed response" in error.message
    assert len(fake.requests) == 1


async def test_unknown_event_and_block_types_are_skipped(fake, client, retry):
    # The docs promise new event types may appear; thinking blocks are one such addition.
    fake.script(
        stream_reply(
            sse(
                MESSAGE_START,
                block_start(0, '{"type": "thinking", "thinking": ""}'),
                event(
                    "content_block_delta",
                    '{"type": "content_block_delta", "index": 0, '
                    '"delta": {"type": "thinking_delta", "thinking": "Let me see"}}',
                ),
                block_stop(0),
                event("future_event", '{"type": "future_event", "anything": [1, 2]}'),
            )
            + TEXT_STREAM[1:]
        )
    )

    got = await collect(model(fake, client, retry).stream(request()))

    assert got == [
        TextChunk("Hello"),
        TextChunk("!"),
        UsageChunk(Usage(input_tokens=25, output_tokens=15)),
    ]
