"""The OpenAI Chat Completions streaming API, and every server that speaks it (vLLM, Ollama,
OpenRouter, LiteLLM…): they differ only by base URL, key and headers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import msgspec

from adapters.llm.http import (
    HttpRetryPolicy,
    SseEvent,
    bad_response,
    code_for_status,
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
from domain.conversation.model import Message, Role, Usage
from domain.ids import new_id

_Count = Annotated[int, msgspec.Meta(ge=0)]


# The chunk shapes we read; every other field a provider adds is ignored.
class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: _Count | None = None
    completion_tokens: _Count | None = None


class _StreamError(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    # OpenRouter and some proxies report a failure mid-stream as a chunk with an error.
    error: _StreamError | str | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


@dataclass(slots=True)
class _Call:
    index: int
    id: str | None
    name: str
    pending: list[str] = field(default_factory=list)
    call_id: str = ""
    started: bool = False
    ended: bool = False


class _Translator:
    """Turns chunks into port chunks. Providers stream parallel calls one after another by
    ``index``; the port wants each call started, fed and ended before the next begins, so a
    call ends when the next one starts, and the rest end at ``finish_reason``."""

    def __init__(self, provider: str, secrets: Sequence[str]) -> None:
        self._provider = provider
        self._secrets = secrets
        self._calls: dict[int, _Call] = {}
        self._open: _Call | None = None
        self._usage: Usage | None = None

    async def __call__(self, events: AsyncIterator[SseEvent]) -> AsyncGenerator[ChatChunk, None]:
        finished = done = False
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = self._decode(event.data)
            if chunk.error is not None:
                raise self._stream_error(chunk.error)
            if chunk.usage is not None:
                # Some servers repeat a running total on every chunk: keep the last one.
                self._usage = Usage(
                    input_tokens=chunk.usage.prompt_tokens or 0,
                    output_tokens=chunk.usage.completion_tokens or 0,
                )
            for choice in chunk.choices or ():
                if choice.index != 0:
                    continue  # we never ask for n > 1
                if choice.delta is not None:
                    for out in self._delta(choice.delta):
                        yield out
                if choice.finish_reason:
                    finished = True
                    for out in self._end_all():
                        yield out
        if not (done or finished):
            raise ModelError(
                f"{self._provider} stream ended before the answer finished",
                code="model_unavailable",
            )
        for out in self._end_all():
            yield out
        if self._usage is not None:
            yield UsageChunk(self._usage)

    def _decode(self, data: str) -> _Chunk:
        try:
            return _chunk_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise bad_response(self._provider, str(exc), self._secrets) from exc

    def _stream_error(self, error: _StreamError | str) -> ModelError:
        if isinstance(error, str):
            message, kind, code = error, None, "model_unavailable"
        else:
            message, kind = error.message or "no message", error.type
            # OpenRouter's codes are HTTP statuses; a textual code says nothing we can map.
            code = (
                code_for_status(error.code)
                if isinstance(error.code, int) and error.code >= 400
                else "model_unavailable"
            )
        text = f"{self._provider} stream failed" + (f" ({kind})" if kind else "")
        return ModelError(redact(f"{text}: {message}", self._secrets), code=code)

    def _delta(self, delta: _Delta) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        text = delta.content or delta.refusal
        if text:
            out.append(TextChunk(text))
        for piece in delta.tool_calls or ():
            out.extend(self._tool_piece(self._index(piece), piece))
        return out

    def _index(self, piece: _ToolCallDelta) -> int:
        if piece.index is not None:
            return piece.index
        # Some servers omit the index: an id names the call, no id continues the open one.
        for call in self._calls.values():
            if piece.id and call.id == piece.id:
                return call.index
        if not piece.id and self._open is not None:
            return self._open.index
        return -1 - len(self._calls)

    def _tool_piece(self, index: int, piece: _ToolCallDelta) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        name = piece.function.name if piece.function is not None else None
        arguments = piece.function.arguments if piece.function is not None else None
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(index=index, id=piece.id, name=name or "")
        else:
            if call.id is None and piece.id:
                call.id = piece.id
            if name and not call.started:
                call.name = name
        if arguments:
            if call.ended:
                raise bad_response(
                    self._provider,
                    f"arguments for tool call {index} arrived after another call started",
                )
            call.pending.append(arguments)
        if not call.started and call.name:
            out.extend(self._end_open())
            call.started = True
            call.call_id = call.id or new_id("call")
            self._open = call
            out.append(ToolCallStarted(call.call_id, call.name))
        if call.started and call.pending:
            out.extend(ToolCallDelta(call.call_id, part) for part in call.pending)
            call.pending.clear()
        return out

    def _end_open(self) -> list[ChatChunk]:
        call, self._open = self._open, None
        if call is None:
            return []
        call.ended = True
        return [ToolCallEnded(call.call_id)]

    def _end_all(self) -> list[ChatChunk]:
        for call in self._calls.values():
            if not call.started:
                raise bad_response(self._provider, f"tool call {call.index} has no name")
        return self._end_open()


def _message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role is Role.ASSISTANT:
        wire: dict[str, Any] = {"role": "assistant", "content": message.content or None}
        if message.tool_calls:
            wire["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        return wire
    return {"role": message.role.value, "content": message.content}


class OpenAiChatModel:
    """``ChatModel`` over ``POST {base_url}/chat/completions`` with ``stream: true``. Sends
    ``Authorization: Bearer`` only when there is a key, so keyless local servers work too.
    Retries per ``retry`` only before the first chunk."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        provider_name: str = "openai",
        retry: HttpRetryPolicy,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._provider = provider_name
        self._retry = retry
        self._secrets = (api_key,) if api_key else ()
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        headers.update(extra_headers or {})
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers = headers

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self._model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        def translate(events: AsyncIterator[SseEvent]) -> AsyncGenerator[ChatChunk, None]:
            # A fresh translator per attempt: a retried request starts from nothing.
            return _Translator(self._provider, self._secrets)(events)

        chunks = stream_chunks(
            self._client,
            provider=self._provider,
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
