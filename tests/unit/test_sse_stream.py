"""The lean SSE response: what the request needed is let go once the stream has started, and a
stream cancelled by a stopping server still ends as a complete answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from entrypoints.http.agui.encoder import HEARTBEAT
from entrypoints.http.sse import _LeanStreamingResponse


def http_scope() -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "headers": [(b"authorization", b"Bearer secret"), (b"content-type", b"application/json")],
        "state": {},
    }
    state = ScopeState.from_scope(scope)
    state.body = b'{"runId": "r1"}'
    state.headers = object()  # type: ignore[assignment]
    state.url = object()  # type: ignore[assignment]
    return scope


class Wire:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.first_body = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.first_body.set()

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")


async def frames_then_silence() -> AsyncIterator[bytes]:
    yield b"id: 1\ndata: {}\n\n"
    await asyncio.Event().wait()
    yield HEARTBEAT


def lean_response() -> _LeanStreamingResponse:
    return _LeanStreamingResponse(iterator=frames_then_silence(), media_type="text/event-stream")


async def test_a_started_stream_keeps_nothing_of_the_request() -> None:
    scope, wire = http_scope(), Wire()
    response = lean_response()
    task = asyncio.create_task(response(scope, wire.receive, wire.send))  # type: ignore[arg-type]
    await asyncio.wait_for(wire.first_body.wait(), 5)
    state = ScopeState.from_scope(scope)
    assert (state.body, state.headers, state.url) == (Empty, Empty, Empty)
    assert scope["headers"] == []
    assert wire.messages[0]["type"] == "http.response.start"
    assert list(response.headers.headers) == []
    task.cancel()
    await task


async def test_a_stream_cancelled_by_a_stopping_server_ends_as_a_complete_answer() -> None:
    scope, wire = http_scope(), Wire()
    response = lean_response()
    task = asyncio.create_task(response(scope, wire.receive, wire.send))  # type: ignore[arg-type]
    await asyncio.wait_for(wire.first_body.wait(), 5)
    task.cancel()
    await task  # returns: the request does not fail
    assert not task.cancelled()
    assert wire.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    bodies = [m["body"] for m in wire.messages if m["type"] == "http.response.body"]
    assert bodies == [b"id: 1\ndata: {}\n\n", b""]
