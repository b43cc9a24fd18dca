"""A lean SSE response: one task per stream.

Litestar's ``Stream`` runs each stream in an anyio task group beside a second task that
listens for the client's disconnect. For thousands of held streams that is the largest cost per
stream, so this response streams from the handler's own task and checks for a disconnect only
when it sends a heartbeat (uvicorn drops writes to a closed connection silently). A stream
whose client left thus ends at its next heartbeat at the latest; the run itself never depended
on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import HTTPResponseBodyEvent, Receive, Send

from entrypoints.http.agui.encoder import HEARTBEAT

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _client_left(receive: Receive) -> bool:
    try:
        # A closed connection answers at once; an open one would wait for the next request.
        message = await asyncio.wait_for(receive(), 0.001)
    except TimeoutError:
        return False
    return message["type"] == "http.disconnect"


class _LeanStreamingResponse(ASGIStreamingResponse):
    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        iterator = self.iterator
        try:
            async for chunk in iterator:
                event: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": chunk if isinstance(chunk, bytes) else chunk.encode(),
                    "more_body": True,
                }
                await send(event)
                if chunk is HEARTBEAT and await _client_left(receive):
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if isinstance(iterator, AsyncIterator) and hasattr(iterator, "aclose"):
                await iterator.aclose()


class EventStream(Stream):
    """``text/event-stream`` of pre-encoded frames."""

    def __init__(self, content: AsyncIterator[bytes] | Any) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        base = super().to_asgi_response(*args, **kwargs)
        assert isinstance(base, ASGIStreamingResponse)
        base.__class__ = _LeanStreamingResponse
        return base
