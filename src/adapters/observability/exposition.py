"""``/metrics`` for processes without an HTTP server of their own (``sba worker``): a minimal
HTTP/1.1 listener on the event loop that answers ``GET /metrics`` and nothing else, so the
stores behind the gauges are read on the loop that owns their clients."""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from adapters.observability.metrics import CONTENT_TYPE, Metrics

_MAX_HEAD = 8192


def _answer(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def serve_metrics(
    metrics: Metrics, host: str, port: int, *, token: str | None = None
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            if method != "GET" or target.split("?", 1)[0] != "/metrics":
                reply = _answer("404 Not Found", b"only GET /metrics is served here\n")
            elif token is not None and not hmac.compare_digest(
                headers.get("authorization", "").encode(), f"Bearer {token}".encode()
            ):
                reply = _answer("401 Unauthorized", b"send the metrics token\n")
            else:
                reply = _answer("200 OK", await metrics.scrape(), f"{CONTENT_TYPE}; charset=utf-8")
        except ValueError:
            reply = _answer("400 Bad Request", b"malformed request\n")
        writer.write(reply)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
