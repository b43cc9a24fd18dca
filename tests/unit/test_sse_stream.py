"""The lean SSE response: what the request needed is let go once the stream has started, and a
stream cancelled by a stopping server still ends as a complete answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from entrypoints.http.agui.encoder import HEARTBEAT
from entrypoints.http.sse import DETACH_KEY, _LeanStreamingResponse, detachable


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


class Framework:
    """Stands for the framework's call chain: a per-request resource held open around the
    handler, and a ``send`` wrapper that records what passes through it."""

    def __init__(self, *, keep_in_chain: bool = False) -> None:
        self.resource_closed = asyncio.Event()
        self.passed: list[str] = []
        self.keep_in_chain = keep_in_chain

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: dict[str, Any]) -> None:
            self.passed.append(message["type"])
            await send(message)

        if self.keep_in_chain:
            scope.pop(DETACH_KEY, None)  # as a middleware that must see the body does
        try:
            await lean_response()(scope, receive, wrapped)
        finally:
            self.resource_closed.set()


async def test_a_started_stream_leaves_the_frameworks_call_chain() -> None:
    scope, wire, framework = http_scope(), Wire(), Framework()
    task = asyncio.create_task(detachable(framework)(scope, wire.receive, wire.send))
    await asyncio.wait_for(wire.first_body.wait(), 5)
    # The stream is open, yet the framework's chain has returned and let go of its resources.
    await asyncio.wait_for(framework.resource_closed.wait(), 5)
    assert not task.done()
    assert framework.passed == ["http.response.start"]
    assert "state" not in scope and DETACH_KEY not in scope
    assert [m["type"] for m in wire.messages] == ["http.response.start", "http.response.body"]
    task.cancel()
    await task  # a stopping server still ends the answer properly
    assert wire.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_middleware_that_must_see_the_body_keeps_the_stream_in_the_chain() -> None:
    scope, wire, framework = http_scope(), Wire(), Framework(keep_in_chain=True)
    task = asyncio.create_task(detachable(framework)(scope, wire.receive, wire.send))
    await asyncio.wait_for(wire.first_body.wait(), 5)
    assert not framework.resource_closed.is_set()
    assert framework.passed == ["http.response.start", "http.response.body"]
    task.cancel()
    await task
    assert framework.passed[-1] == "http.response.body" and framework.resource_closed.is_set()
