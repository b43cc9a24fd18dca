"""The Anthropic Messages streaming API."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import msgspec

from adapters.llm.http import (
    HttpRetryPolicy,
    SseEvent,
    bad_response,
    json_encoder,
    redact,
    stream_chunks,
)
from application.conversation.ports import (
    ChatChunk,
    ChatRequest,
    TextChunk,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
    UsageChunk,
)
from application.errors import ModelError
from application.json_limits import json_too_deep
from domain.conversation.model import Message, Role, Usage

_Count = Annotated[int, msgspec.Meta(ge=0)]


# One loose shape for every event: each type fills the fields it uses, and event or block
# types added to the API later are skipped rather than refused.
class _Usage(msgspec.Struct):
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_creation_input_tokens: _Count | None = None
    cache_read_input_tokens: _Count | None = None


class _Message(msgspec.Struct):
    usage: _Usage | None = None


class _Block(msgspec.Struct):
    type: str
    id: str | None = None
    name: str | None = None
    text: str | None = None
    input: dict[str, Any] | None = None


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None


class _Error(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _Event(msgspec.Struct):
    type: str
    message: _Message | None = None
    index: int | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_event_decoder = msgspec.json.Decoder(_Event)

# Anthropic's error types (https://docs.anthropic.com/en/api/errors) as port codes.
_ERROR_CODES = {
    "invalid_request_error": "model_bad_request",
    "request_too_large": "model_bad_request",
    "not_found_error": "model_bad_request",
    "authentication_error": "model_auth",
    "permission_error": "model_auth",
    "billing_error": "model_auth",
    "rate_limit_error": "model_rate_limited",
    "timeout_error": "model_timeout",
    "api_error": "model_unavailable",
    "overloaded_error": "model_unavailable",
}


@dataclass(slots=True)
class _ToolBlock:
    call_id: str
    initial_input: dict[str, Any]
    fed: bool = False


class _Translator:
    def __init__(self, provider: str, secrets: Sequence[str]) -> None:
        self._provider = provider
        self._secrets = secrets
        self._tools: dict[int, _ToolBlock] = {}
        self._usage = _Usage()

    async def __call__(self, events: AsyncIterator[SseEvent]) -> AsyncGenerator[ChatChunk, None]:
        async for raw in events:
            event = self._decode(raw.data)
            kind = event.type
            if kind == "content_block_delta" and event.delta is not None:
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    yield TextChunk(delta.text)
                elif delta.type == "input_json_delta" and delta.partial_json:
                    block = self._tools.get(self._index(event))
                    if block is not None:
                        block.fed = True
                        yield ToolCallDelta(block.call_id, delta.partial_json)
            elif kind == "content_block_start" and event.content_block is not None:
                for out in self._start(self._index(event), event.content_block):
                    yield out
            elif kind == "content_block_stop":
                tool = self._tools.pop(self._index(event), None)
                if tool is not None:
                    if not tool.fed:
                        # A call without parameters may stream no JSON at all.
                        text = json_encoder.encode(tool.initial_input).decode()
                        yield ToolCallDelta(tool.call_id, text)
                    yield ToolCallEnded(tool.call_id)
            elif kind == "message_start" and event.message is not None:
                self._take_usage(event.message.usage)
            elif kind == "message_delta":
                self._take_usage(event.usage)
            elif kind == "message_stop":
                yield UsageChunk(self._total())
                return
            elif kind == "error":
                raise self._error(event.error)
            # "ping" and event types added later carry nothing for us.
        raise ModelError(
            f"{self._provider} stream ended before message_stop", code="model_unavailable"
        )

    def _decode(self, data: str) -> _Event:
        try:
            return _event_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise bad_response(self._provider, str(exc), self._secrets) from exc

    def _index(self, event: _Event) -> int:
        if event.index is None:
            raise bad_response(self._provider, f"{event.type} without an index", self._secrets)
        return event.index

    def _start(self, index: int, block: _Block) -> list[ChatChunk]:
        if block.type == "text":
            return [TextChunk(block.text)] if block.text else []
        if block.type != "tool_use":
            return []  # thinking, server tools: nothing the port carries
        if not block.id or not block.name:
            raise bad_response(self._provider, "a tool_use block without id or name")
        self._tools[index] = _ToolBlock(block.id, block.input or {})
        return [ToolCallStarted(block.id, block.name)]

    def _take_usage(self, usage: _Usage | None) -> None:
        # message_delta's counts are cumulative: the latest value of each field wins.
        if usage is None:
            return
        merged = {
            name: value
            for name in _Usage.__struct_fields__
            if (value := getattr(usage, name)) is not None
        }
        self._usage = msgspec.structs.replace(self._usage, **merged)

    def _total(self) -> Usage:
        u = self._usage
        # Cached prompt tokens were read by the model too; OpenAI's prompt_tokens counts them.
        read = (
            (u.input_tokens or 0)
            + (u.cache_creation_input_tokens or 0)
            + (u.cache_read_input_tokens or 0)
        )
        return Usage(input_tokens=read, output_tokens=u.output_tokens or 0)

    def _error(self, error: _Error | None) -> ModelError:
        kind = error.type if error is not None and error.type else "error"
        message = error.message if error is not None and error.message else "no message"
        return ModelError(
            redact(f"{self._provider} stream failed ({kind}): {message}", self._secrets),
            code=_ERROR_CODES.get(kind, "model_unavailable"),
        )


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(arguments) if arguments.strip() else {}
    except (msgspec.DecodeError, RecursionError):
        value = None
    if isinstance(value, dict) and not json_too_deep(value):
        return value
    # Arguments the model got wrong earlier are kept, so it can see what it sent.
    return {"_raw_arguments": arguments}


def _messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role in (Role.SYSTEM, Role.DEVELOPER):
            if message.content:
                system.append(message.content)
        elif message.role is Role.TOOL:
            result = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
            }
            previous = wire[-1] if wire else None
            # Results of one turn's calls travel together, in one user message.
            if previous is not None and previous.get("_results"):
                previous["content"].append(result)
            else:
                wire.append({"role": "user", "content": [result], "_results": True})
        elif message.role is Role.ASSISTANT:
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": _tool_input(call.arguments),
                }
                for call in message.tool_calls
            )
            if blocks:  # the API refuses empty assistant turns
                wire.append({"role": "assistant", "content": blocks})
        else:
            previous = wire[-1] if wire else None
            if previous is not None and previous.get("_results"):
                # Text after tool results joins their turn: tool_result blocks come first.
                previous["content"].append({"type": "text", "text": message.content})
                previous["_results"] = False
            else:
                wire.append({"role": "user", "content": message.content})
    for entry in wire:
        entry.pop("_results", None)
    return "\n\n".join(system), wire


class AnthropicChatModel:
    """``ChatModel`` over ``POST {base_url}/v1/messages`` with ``stream: true``. System and
    developer messages become the top-level ``system``; tool results travel as ``tool_result``
    blocks in user turns. Usage counts cached prompt tokens as input. Retries per ``retry``
    only before the first chunk."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str = "https://api.anthropic.com",
        api_key: str,
        model: str,
        max_tokens: int = 1024,
        retry: HttpRetryPolicy,
        anthropic_version: str = "2023-06-01",
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._model = model
        self._max_tokens = max_tokens
        self._retry = retry
        self._secrets = (api_key,) if api_key else ()
        self._headers = {
            "x-api-key": api_key,
            "anthropic-version": anthropic_version,
            "content-type": "application/json",
            "accept": "text/event-stream",
        }

    def body(self, request: ChatRequest) -> dict[str, Any]:
        system, messages = _messages(request.messages)
        body: dict[str, Any] = {
            "model": request.model or self._model,
            "max_tokens": self._max_tokens,
            "stream": True,
            "messages": messages,
        }
        if system:
            body["system"] = system
        if request.tools:
            body["tools"] = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                }
                for tool in request.tools
            ]
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        def translate(events: AsyncIterator[SseEvent]) -> AsyncGenerator[ChatChunk, None]:
            return _Translator("anthropic", self._secrets)(events)

        chunks = stream_chunks(
            self._client,
            provider="anthropic",
            url=self._url,
            headers=self._headers,
            body=json_encoder.encode(self.body(request)),
            retry=self._retry,
            translate=translate,
            secrets=self._secrets,
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
