"""A fake model provider on 127.0.0.1 that speaks real HTTP/1.1: it records each request and
replays a scripted reply, so the adapters are tested through httpx, sockets and all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest

from adapters.llm.http import HttpRetryPolicy
from application.conversation.ports import ChatChunk, ChatRequest
from application.errors import ModelError
from domain.conversation.model import Message, Role, ToolCall
from domain.ids import MessageId, TenantId

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` pieces are sent as separate HTTP chunks; ``then`` says what
    happens after them: finish the body, cut the connection mid-body, or hang until the client
    leaves. ``hang`` hangs before sending even the status line."""

    status: int = 200
    body: Sequence[bytes] = ()
    headers: dict[str, str] = field(default_factory=dict)
    then: Literal["finish", "cut", "hang"] = "finish"
    hang: bool = False


def sse(*events: str) -> list[bytes]:
    """Event blocks, each sent as its own chunk, as a provider flushes them."""
    return [f"{event.strip()}\n\n".encode() for event in events]


def json_reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status=status,
        body=[json.dumps(body).encode()],
        headers={"content-type": "application/json", **(headers or {})},
    )


def stream_reply(events: list[bytes], *, then: Literal["finish", "cut", "hang"] = "finish"):
    return Reply(body=events, headers={"content-type": "text/event-stream"}, then=then)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeProvider:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: list[Reply] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # Set when a client hangs up on a reply that was hanging or streaming.
        self.client_left = asyncio.Event()
        self.url = ""

    def script(self, *replies: Reply) -> None:
        """Replies in order, one per request; the last one repeats."""
        self._script = list(replies)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Received(method, path, headers, body))
        reply = self._script[min(len(self.requests), len(self._script)) - 1]
        if reply.hang:
            await self._wait_for_client(reader)
            return
        out = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        out += [f"{k}: {v}" for k, v in reply.headers.items()]
        out += ["transfer-encoding: chunked", "connection: close", "", ""]
        writer.write("\r\n".join(out).encode("latin-1"))
        for piece in reply.body:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if reply.then == "finish":
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif reply.then == "hang":
            await self._wait_for_client(reader)
        # "cut": close with the chunked body unfinished, as a dropped connection does.

    async def _wait_for_client(self, reader: asyncio.StreamReader) -> None:
        await reader.read()  # returns at EOF: the client closed the connection
        self.client_left.set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as c:
        yield c


@dataclass
class Sleeps:
    """Records the retry waits instead of sleeping them."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def retry(sleeps: Sleeps) -> HttpRetryPolicy:
    # The jitter draws its upper bound, so the waits are known: 0.1, 0.2, 0.4… capped at 1.
    return HttpRetryPolicy(
        max_attempts=3,
        base_delay_s=0.1,
        max_delay_s=1.0,
        sleep=sleeps,
        uniform=lambda low, high: high,
    )


def msg(n: int, role: Role, content: str = "", **kw: Any) -> Message:
    return Message(id=MessageId(f"m{n}"), role=role, content=content, **kw)


def call(id: str, name: str, arguments: str) -> ToolCall:
    return ToolCall(id=id, name=name, arguments=arguments)


def request(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(tenant_id=TenantId("t1"), messages=messages, **kw)


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


async def collect_until_error(
    stream: AsyncIterator[ChatChunk],
) -> tuple[list[ChatChunk], ModelError]:
    got: list[ChatChunk] = []
    with pytest.raises(ModelError) as caught:
        async for chunk in stream:
            got.append(chunk)
    return got, caught.value
