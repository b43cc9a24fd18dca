"""A lean SSE response: one task per stream.

Litestar's ``Stream`` runs each stream in an anyio task group beside a second task that
listens for the client's disconnect. For thousands of held streams that is the largest cost per
stream, so this response streams from the handler's own task and checks for a disconnect only
when it sends a heartbeat (uvicorn drops writes to a closed connection silently). A stream
whose client left thus ends at its next heartbeat at the latest; the run itself never depended
on it.

What the request needed is let go once the stream has started: the parsed and raw request
headers, the body and the URL that the framework caches for the request's lifetime, and the
response's own headers. A stream held for minutes keeps only what it streams (ADR 0036).

Under :func:`detachable` (the application is wrapped in it), a started stream also leaves the
framework's call chain: its response hands the rest of the body to the wrapper and returns, so
routing, the middlewares, the handler and the request's DI container end at once instead of
staying suspended for the stream's lifetime. The body then goes out through the ``send`` the
wrapper was given: the framework's own wrappers of ``send`` only ever act on the answer's start,
and a middleware that must see the body (the idempotency middleware, when it holds an answer
back) takes the stream's slot out of the scope so that it stays in the chain (ADR 0044).

A stream still open when the server stops (uvicorn cancels it once its graceful-shutdown time
is up) ends as a complete response: its client resumes with ``Last-Event-ID`` elsewhere."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import ASGIApp, Empty, HTTPResponseBodyEvent, Receive, Scope, Send
from litestar.utils.scope.state import CONNECTION_STATE_KEY, ScopeState

from entrypoints.http.agui.encoder import HEARTBEAT

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Where a started stream leaves the rest of its body for :func:`detachable` to send.
DETACH_KEY = "sba.stream_body"


async def _client_left(receive: Receive) -> bool:
    try:
        # A closed connection answers at once; an open one would wait for the next request.
        message = await asyncio.wait_for(receive(), 0.001)
    except TimeoutError:
        return False
    return message["type"] == "http.disconnect"


# What the framework caches per request (``ScopeState``), none of it read once the answer began.
_REQUEST_CACHES = (
    "accept",
    "base_url",
    "body",
    "content_type",
    "cookies",
    "headers",
    "json",
    "msgpack",
    "parsed_query",
    "url",
)


def _forget_request(scope: Scope) -> None:
    state = scope.get("state", {}).get(CONNECTION_STATE_KEY)
    if isinstance(state, ScopeState):
        for name in _REQUEST_CACHES:
            setattr(state, name, Empty)
    headers = scope.get("headers")
    if isinstance(headers, list):
        headers.clear()  # in place: the server's connection holds the same list
    else:
        scope["headers"] = []


class _LeanStreamingResponse(ASGIStreamingResponse):
    __slots__ = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.start_response(send=send)
        self.headers.headers.clear()
        _forget_request(scope)
        if self.is_head_response:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await self.after_response()
            return
        slot = scope.get(DETACH_KEY)
        if isinstance(slot, list) and self.background is None:
            # The rest needs only the frames' iterator: the response object goes now too.
            slot.append(functools.partial(_send_body, self.iterator, receive=receive))
            return
        await self.send_body(send=send, receive=receive)
        await self.after_response()

    async def send_body(self, send: Send, receive: Receive) -> None:
        await _send_body(self.iterator, send, receive)


async def _send_body(iterator: Any, send: Send, receive: Receive) -> None:
    try:
        async for chunk in iterator:
            heartbeat = chunk is HEARTBEAT
            event: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": chunk if isinstance(chunk, bytes) else chunk.encode(),
                "more_body": True,
            }
            del chunk  # not kept while the stream waits for its next events
            await send(event)
            del event
            if heartbeat and await _client_left(receive):
                return
    except asyncio.CancelledError:
        # Only the server cancels a stream, when it stops: end the answer properly (the
        # client resumes elsewhere) instead of failing the request.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        if isinstance(iterator, AsyncIterator) and hasattr(iterator, "aclose"):
            await iterator.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class EventStream(Stream):
    """``text/event-stream`` of pre-encoded frames."""

    def __init__(self, content: AsyncIterator[bytes] | Any) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        base = super().to_asgi_response(*args, **kwargs)
        assert isinstance(base, ASGIStreamingResponse)
        base.__class__ = _LeanStreamingResponse
        return base


def detachable(app: ASGIApp) -> ASGIApp:
    """``app`` where a started event stream sends the rest of its body from here, after the
    framework's call chain (routing, middlewares, handler, the request's DI container) has
    returned. What the request left in the scope goes with it; the route template stays for
    the request metrics around this."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        slot: list[Callable[[Send], Awaitable[None]]] = []
        scope[DETACH_KEY] = slot  # type: ignore[literal-required]
        await app(scope, receive, send)
        if not slot:
            return
        rest = slot.pop()
        del slot
        for key in ("state", "route_handler", "path_params", "app", "litestar_app", DETACH_KEY):
            scope.pop(key, None)  # type: ignore[misc]
        await rest(send)

    return wrapper
