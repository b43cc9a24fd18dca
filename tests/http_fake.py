"""The HTTP/1.1 plumbing the local fakes of third-party services share: read each request on a
keep-alive connection, hand it to the fake, write its answer back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    # For HEAD: the length the body would have (none is sent).
    length: int | None = None


def json_answer(status: int, payload: Any) -> Answer:
    return Answer(status, json.dumps(payload).encode(), {"content-type": "application/json"})


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Callable[[Request], Awaitable[Answer]],
) -> None:
    """Answers requests on one connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            answer = await handle(Request(method, path, headers, body))
            length = answer.length if answer.length is not None else len(answer.body)
            extra = "".join(f"{k}: {v}\r\n" for k, v in (answer.headers or {}).items())
            writer.write(
                f"HTTP/1.1 {answer.status} X\r\n{extra}content-length: {length}\r\n\r\n".encode()
                + (answer.body if method != "HEAD" else b"")
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()
