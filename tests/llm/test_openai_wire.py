"""OpenAiChatModel against a fake Chat Completions server over real HTTP.

The stream fixtures reproduce the examples in OpenAI's public documentation: the API
reference's "Create chat completion" streaming example and "chat completion chunk object",
the function-calling guide's "Streaming" section (tool-call deltas by ``index`` with ``id`` and
``name`` only in the first), and ``stream_options.include_usage`` ("an additional chunk …
before the ``data: [DONE]`` message … the ``choices`` field will always be an empty array").
Error bodies follow the "Error codes" guide's ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.llm.http import HttpRetryPolicy, SseEvent, iter_sse
from adapters.llm.openai import OpenAiChatModel
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
    Sleeps,
    call,
    collect,
    collect_until_error,
    json_reply,
    msg,
    request,
    sse,
    stream_reply,
)

KEY = "sk-proj-Sup3rS3cretKeyThatMustNeverLeak0123"

_HEAD = '"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,' + (
    '"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb"'
)


def chunk(choices: str, usage: str = "null") -> str:
    return f'data: {{{_HEAD},"choices":[{choices}],"usage":{usage}}}'


def delta(body: str, finish: str = "null") -> str:
    return f'{{"index":0,"delta":{body},"logprobs":null,"finish_reason":{finish}}}'


USAGE = chunk(
    "",
    '{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}',
)

# API reference, "Create chat completion" → Streaming example, with include_usage.
TEXT_STREAM = sse(
    chunk(delta('{"role":"assistant","content":"","refusal":null}')),
    chunk(delta('{"content":"Hello"}')),
    chunk(delta('{"content":"!"}')),
    chunk(delta('{"content":" How can I help?"}')),
    chunk(delta("{}", '"stop"')),
    USAGE,
    "data: [DONE]",
)


def tool_delta(body: str, first: bool = False) -> str:
    role = '"role":"assistant","content":null,' if first else ""
    return chunk(delta(f'{{{role}"tool_calls":[{body}]}}'))


def args(index: int, piece: str) -> str:
    text = json.dumps(piece)
    return (
        f'{{"index":{index},"id":null,"type":null,"function":{{"name":null,"arguments":{text}}}}}'
    )


# Function-calling guide → "Streaming": the first delta names the call, the arguments follow
# in pieces with id and name null, and the choice finishes with "tool_calls".
TOOL_STREAM = sse(
    tool_delta(
        '{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}',
        first=True,
    ),
    tool_delta(args(0, '{"')),
    tool_delta(args(0, "location")),
    tool_delta(args(0, '":"')),
    tool_delta(args(0, "Paris")),
    tool_delta(args(0, ",")),
    tool_delta(args(0, " France")),
    tool_delta(args(0, '"}')),
    chunk(delta("{}", '"tool_calls"')),
    USAGE,
    "data: [DONE]",
)

# Two parallel calls, streamed one after the other by index (same guide, parallel calls).
PARALLEL_STREAM = sse(
    tool_delta(
        '{"index":0,"id":"call_a","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}',
        first=True,
    ),
    tool_delta(args(0, '{"location":')),
    tool_delta(args(0, '"Paris"}')),
    tool_delta(
        '{"index":1,"id":"call_b","type":"function",'
        '"function":{"name":"get_weather","arguments":"{\\"location\\":"}}'
    ),
    tool_delta(args(1, '"Bogotá"}')),
    chunk(delta("{}", '"tool_calls"')),
    USAGE,
    "data: [DONE]",
)


def error_body(message: str, type_: str, code: str | None, param: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# "Error codes" guide: 401 invalid key (OpenAI masks the key it echoes), 429 rate limit, 500.
UNAUTHORIZED = json_reply(
    401,
    error_body(
        "Incorrect API key provided: sk-proj-****0123. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
)
RATE_LIMITED = json_reply(
    429,
    error_body(
        "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min (TPM): "
        "Limit 30000, Used 30000, Requested 512. Please try again in 1s.",
        "tokens",
        "rate_limit_exceeded",
    ),
    headers={"retry-after": "1"},
)
RATE_LIMITED_BODY = json.loads(RATE_LIMITED.body[0])
SERVER_ERROR = json_reply(
    500,
    error_body(
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
)
BAD_REQUEST = json_reply(
    400,
    error_body(
        "Invalid value for 'model': 'gpt-5-imaginary' does not exist.",
        "invalid_request_error",
        "model_not_found",
        "model",
    ),
)


def model(
    fake: FakeProvider,
    client: httpx.AsyncClient,
    retry: HttpRetryPolicy,
    *,
    api_key: str | None = KEY,
    **kw,
) -> OpenAiChatModel:
    return OpenAiChatModel(
        client,
        base_url=fake.url + "/v1",
        api_key=api_key,
        model="gpt-4o-mini",
        retry=retry,
        **kw,
    )


async def test_text_stream_yields_text_then_usage(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"))))

    assert got == [
        TextChunk("Hello"),
        TextChunk("!"),
        TextChunk(" How can I help?"),
        UsageChunk(Usage(input_tokens=9, output_tokens=12)),
    ]


async def test_request_carries_model_stream_flags_bearer_key_and_extra_headers(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))
    chat = model(fake, client, retry, extra_headers={"HTTP-Referer": "https://sba.example"})

    await collect(chat.stream(request(msg(1, Role.USER, "Hi"))))

    [received] = fake.requests
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["http-referer"] == "https://sba.example"
    assert received.json() == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_keyless_server_gets_no_authorization_header(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    await collect(model(fake, client, retry, api_key=None).stream(request(msg(1, Role.USER))))

    assert "authorization" not in fake.requests[0].headers


async def test_request_model_overrides_the_configured_one(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))

    await collect(
        model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"), model="llama3.1:8b"))
    )

    assert fake.requests[0].json()["model"] == "llama3.1:8b"


async def test_messages_and_tools_map_to_chat_completions_shapes(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM))
    weather = ToolSpec(
        name="get_weather",
        description="Current weather in a city",
        parameters={
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    )
    conversation = request(
        msg(1, Role.SYSTEM, "Be brief."),
        msg(2, Role.DEVELOPER, "Use metric units."),
        msg(3, Role.USER, "Weather in Paris and Bogotá?"),
        msg(
            4,
            Role.ASSISTANT,
            "",
            tool_calls=(
                call("call_a", "get_weather", '{"location":"Paris"}'),
                call("call_b", "get_weather", '{"location":"Bogotá"}'),
            ),
        ),
        msg(5, Role.TOOL, "18°C", tool_call_id="call_a"),
        msg(6, Role.TOOL, "24°C", tool_call_id="call_b"),
        msg(7, Role.ASSISTANT, "Paris 18°C, Bogotá 24°C."),
        tools=(weather,),
    )

    await collect(model(fake, client, retry).stream(conversation))

    body = fake.requests[0].json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "Weather in Paris and Bogotá?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Bogotá"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18°C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "24°C"},
        {"role": "assistant", "content": "Paris 18°C, Bogotá 24°C."},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": weather.parameters,
            },
        }
    ]


async def test_tool_call_arguments_split_across_chunks_are_reassembled(fake, client, retry):
    fake.script(stream_reply(TOOL_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Paris?"))))

    call_id = "call_DdmO9pD3xa9XTPNJ32zg2hcA"
    assert got[0] == ToolCallStarted(call_id, "get_weather")
    assert got[-2:] == [ToolCallEnded(call_id), UsageChunk(Usage(input_tokens=9, output_tokens=12))]
    pieces = got[1:-2]
    assert all(isinstance(p, ToolCallDelta) and p.call_id == call_id and p.delta for p in pieces)
    assert len(pieces) == 7
    arguments = "".join(p.delta for p in pieces if isinstance(p, ToolCallDelta))
    assert json.loads(arguments) == {"location": "Paris, France"}


async def test_parallel_tool_calls_each_end_before_the_next_starts(fake, client, retry):
    fake.script(stream_reply(PARALLEL_STREAM))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Both?"))))

    assert got == [
        ToolCallStarted("call_a", "get_weather"),
        ToolCallDelta("call_a", '{"location":'),
        ToolCallDelta("call_a", '"Paris"}'),
        ToolCallEnded("call_a"),
        ToolCallStarted("call_b", "get_weather"),
        ToolCallDelta("call_b", '{"location":'),
        ToolCallDelta("call_b", '"Bogotá"}'),
        ToolCallEnded("call_b"),
        UsageChunk(Usage(input_tokens=9, output_tokens=12)),
    ]


async def test_open_calls_end_at_done_when_no_finish_reason_came(fake, client, retry):
    fake.script(stream_reply(TOOL_STREAM[:8] + sse("data: [DONE]")))

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER))))

    assert got[-1] == ToolCallEnded("call_DdmO9pD3xa9XTPNJ32zg2hcA")


async def test_rate_limit_then_server_error_are_retried_with_jitter_before_the_first_chunk(
    fake, client, sleeps: Sleeps
):
    fake.script(SERVER_ERROR, SERVER_ERROR, stream_reply(TEXT_STREAM))
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    retry = HttpRetryPolicy(
        max_attempts=3, base_delay_s=0.1, max_delay_s=0.15, sleep=sleeps, uniform=uniform
    )

    got = await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"))))

    assert len(fake.requests) == 3
    assert got[0] == TextChunk("Hello")
    # Full jitter: uniform(0, min(max, base * 2**n)), the cap applying from the second retry.
    assert draws == [(0.0, 0.1), (0.0, 0.15)]
    assert sleeps.delays == [0.05, 0.075]


async def test_retry_after_is_honoured_and_capped(fake, client, sleeps: Sleeps):
    long_wait = json_reply(429, RATE_LIMITED_BODY, headers={"retry-after": "120"})
    fake.script(RATE_LIMITED, long_wait, stream_reply(TEXT_STREAM))
    retry = HttpRetryPolicy(max_attempts=3, base_delay_s=0.1, max_delay_s=30.0, sleep=sleeps)

    await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"))))

    assert len(fake.requests) == 3
    assert sleeps.delays == [1.0, 30.0]


async def test_retry_after_ms_is_preferred_to_retry_after(fake, client, sleeps: Sleeps):
    # OpenAI may send both; the millisecond one is the precise advice.
    precise = json_reply(
        429, RATE_LIMITED_BODY, headers={"retry-after-ms": "250", "retry-after": "1"}
    )
    fake.script(precise, stream_reply(TEXT_STREAM))
    retry = HttpRetryPolicy(max_attempts=2, max_delay_s=30.0, sleep=sleeps)

    await collect(model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi"))))

    assert sleeps.delays == [0.25]


async def test_rate_limit_that_persists_fails_as_model_rate_limited(fake, client, retry, sleeps):
    fake.script(RATE_LIMITED)

    _, error = await collect_until_error(
        model(fake, client, retry).stream(request(msg(1, Role.USER, "Hi")))
    )

    assert len(fake.requests) == 3
    assert len(sleeps.delays) == 2
    assert error.code == "model_rate_limited"
    assert "openai" in error.message
    assert "Rate limit reached for gpt-4o-mini" in error.message


@pytest.mark.parametrize(
    ("reply", "code", "provider_text"),
    [
        (UNAUTHORIZED, "model_auth", "Incorrect API key provided"),
        (
            json_reply(
                403,
                error_body("Project does not have access to model", "invalid_request_error", None),
            ),
            "model_auth",
            "does not have access",
        ),
        (BAD_REQUEST, "model_bad_request", "'gpt-5-imaginary' does not exist"),
        (
            json_reply(
                404,
                error_body("The model `x` does not exist", "invalid_request_error", None),
            ),
            "model_bad_request",
            "does not exist",
        ),
        (SERVER_ERROR, "model_unavailable", "The server had an error"),
        (RATE_LIMITED, "model_rate_limited", "Rate limit reached"),
    ],
)
async def test_error_status_maps_to_code_with_provider_message_and_no_key(
    fake, client, reply: Reply, code: str, provider_text: str
):
    fake.script(reply)
    once = HttpRetryPolicy(max_attempts=1)
    chat = model(fake, client, once, provider_name="openrouter")

    got, error = await collect_until_error(chat.stream(request(msg(1, Role.USER, "Hi"))))

    assert got == []
    assert error.code == code
    assert error.message.startswith(f"openrouter answered HTTP {reply.status}")
    assert provider_text in error.message
    assert KEY not in error.message
    assert "sk-proj-" not in error.message


async def test_auth_and_bad_request_errors_are_not_retried(fake, client, retry, sleeps):
    fake.script(UNAUTHORIZED)

    _, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert error.code == "model_auth"
    assert len(fake.requests) == 1
    assert sleeps.delays == []


async def test_a_key_echoed_back_by_a_provider_is_redacted(fake, client):
    fake.script(json_reply(401, {"error": f"invalid key {KEY} for this server"}))

    _, error = await collect_until_error(
        model(fake, client, HttpRetryPolicy(max_attempts=1)).stream(request())
    )

    assert error.code == "model_auth"
    assert "invalid key" in error.message
    assert KEY not in error.message


async def test_no_retry_once_a_chunk_was_yielded_and_a_broken_stream_is_unavailable(
    fake, client, retry, sleeps
):
    fake.script(stream_reply(TEXT_STREAM[:3], then="cut"), stream_reply(TEXT_STREAM))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello"), TextChunk("!")]
    assert error.code == "model_unavailable"
    assert "openai" in error.message
    assert len(fake.requests) == 1
    assert sleeps.delays == []


async def test_a_stream_broken_before_its_first_chunk_is_retried(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM[:1], then="cut"), stream_reply(TEXT_STREAM))

    got = await collect(model(fake, client, retry).stream(request()))

    assert len(fake.requests) == 2
    assert got[0] == TextChunk("Hello")


async def test_a_stream_that_ends_without_finishing_is_unavailable(fake, client):
    fake.script(stream_reply(TEXT_STREAM[:3]))

    got, error = await collect_until_error(
        model(fake, client, HttpRetryPolicy(max_attempts=1)).stream(request())
    )

    assert got == [TextChunk("Hello"), TextChunk("!")]
    assert error.code == "model_unavailable"


async def test_a_provider_that_never_answers_times_out(fake, sleeps):
    fake.script(Reply(hang=True))
    retry = HttpRetryPolicy(max_attempts=2, base_delay_s=0.0, sleep=sleeps)

    async with httpx.AsyncClient(timeout=httpx.Timeout(0.05)) as impatient:
        chat = model(fake, impatient, retry)
        _, error = await collect_until_error(chat.stream(request()))

    assert error.code == "model_timeout"
    assert "openai timed out" in error.message
    assert len(sleeps.delays) == 1


async def test_a_stream_that_stalls_after_a_chunk_times_out_without_retry(fake, sleeps):
    fake.script(stream_reply(TEXT_STREAM[:2], then="hang"))
    retry = HttpRetryPolicy(max_attempts=3, base_delay_s=0.0, sleep=sleeps)

    # Long enough for the first chunks to arrive on a loaded machine, short for a test.
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.25)) as impatient:
        got, error = await collect_until_error(model(fake, impatient, retry).stream(request()))

    assert got == [TextChunk("Hello")]
    assert error.code == "model_timeout"
    assert sleeps.delays == []


async def test_an_unreachable_provider_is_unavailable(client, retry, sleeps):
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    chat = OpenAiChatModel(
        client, base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, model="m", retry=retry
    )

    _, error = await collect_until_error(chat.stream(request()))

    assert error.code == "model_unavailable"
    assert "openai could not be reached" in error.message
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize(
    "bad",
    [
        "data: {not json",
        chunk(delta('{"content":5}')),
        chunk("", '{"prompt_tokens":-1,"completion_tokens":2}'),
    ],
)
async def test_a_malformed_chunk_is_a_bad_response_and_not_retried(fake, client, retry, bad):
    fake.script(stream_reply(TEXT_STREAM[:2] + sse(bad) + TEXT_STREAM[2:]))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello")]
    assert error.code == "model_bad_response"
    assert "openai sent a malformed response" in error.message
    assert len(fake.requests) == 1


async def test_a_json_answer_to_a_stream_request_is_a_bad_response(fake, client, retry):
    fake.script(json_reply(200, {"id": "chatcmpl-1", "choices": []}))

    _, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert error.code == "model_bad_response"
    assert "expected an event stream" in error.message


async def test_an_error_chunk_mid_stream_fails_with_the_providers_message(fake, client, retry):
    # OpenRouter reports upstream failures after streaming began as a chunk with "error".
    failure = 'data: {"error":{"code":502,"message":"Upstream provider went away"}}'
    fake.script(stream_reply(TEXT_STREAM[:2] + sse(failure)))

    got, error = await collect_until_error(model(fake, client, retry).stream(request()))

    assert got == [TextChunk("Hello")]
    assert error.code == "model_unavailable"
    assert "Upstream provider went away" in error.message


async def test_closing_the_stream_early_hangs_up_on_the_provider(fake, client, retry):
    fake.script(stream_reply(TEXT_STREAM[:2], then="hang"))
    stream = model(fake, client, retry).stream(request())

    assert await anext(stream) == TextChunk("Hello")
    await stream.aclose()

    await asyncio.wait_for(fake.client_left.wait(), timeout=5)


@st.composite
def sse_streams(draw):
    names = st.sampled_from(["", "message_start", "ping", "content_block_delta"])
    text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)
    events = draw(
        st.lists(
            st.builds(SseEvent, names, st.lists(text, min_size=1, max_size=3).map("\n".join)),
            max_size=6,
        )
    )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = []
    for event in events:
        if draw(st.booleans()):
            lines.append(": keep-alive comment")
        if event.event:
            lines.append(f"event: {event.event}")
        lines += [f"data: {part}" for part in event.data.split("\n")]
        lines.append("")
    return events, [line + newline for line in lines]


@given(sse_streams())
def test_sse_framing_recovers_every_event(stream):
    events, lines = stream

    async def feed():
        for line in lines:
            yield line

    async def parse():
        return [event async for event in iter_sse(feed())]

    assert asyncio.run(parse()) == events
