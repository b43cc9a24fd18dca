"""A stand-in for Stripe's meter events endpoint over real HTTP, on a loop of its own in a
thread: form-encoded ``POST /v1/billing/meter_events`` with a bearer secret key, answered in
the documented shape (``object: billing.meter_event`` …), errors as ``{"error": {type,
message}}``, and Stripe's idempotency: a request repeating an ``Idempotency-Key`` gets the first
answer back and is not counted again."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

from tests.in_thread import InThread

SECRET = "sk_test_51SbaFakeKey0000"


class FakeStripe:
    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []  # counted meter events
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.statuses: list[int] = []  # answered before the real answer
        self._answers: dict[str, tuple[int, bytes]] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeStripe:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _answer(self, path: str, headers: dict[str, str], form: dict[str, str]) -> tuple[int, dict]:
        if headers.get("authorization") != f"Bearer {SECRET}":
            return 401, {
                "error": {
                    "type": "invalid_request_error",
                    "message": "Invalid API Key provided: sk_test_****",
                }
            }
        if path != "/v1/billing/meter_events":
            return 404, {
                "error": {
                    "type": "invalid_request_error",
                    "message": f"Unrecognized request URL (POST: {path})",
                }
            }
        if self.statuses:
            status = self.statuses.pop(0)
            kind = "api_error" if status >= 500 else "rate_limit_error"
            return status, {"error": {"type": kind, "message": "Try again later."}}
        missing = [
            k
            for k in ("event_name", "payload[stripe_customer_id]", "payload[value]")
            if k not in form
        ]
        if missing:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "message": f"Missing required param: {missing[0]}.",
                }
            }
        if not form["payload[stripe_customer_id]"].startswith("cus_"):
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "message": "No such customer: " + form["payload[stripe_customer_id]"],
                }
            }
        self.events.append(form)
        return 200, {
            "object": "billing.meter_event",
            "created": 1704824589,
            "event_name": form["event_name"],
            "identifier": form.get("identifier", "generated"),
            "livemode": False,
            "payload": {
                "value": form["payload[value]"],
                "stripe_customer_id": form["payload[stripe_customer_id]"],
            },
            "timestamp": int(form.get("timestamp", "1680210639")),
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                form = dict(parse_qsl(body.decode()))
                self.requests.append((path, headers, form))
                key = headers.get("idempotency-key")
                if key is not None and key in self._answers:
                    status, data = self._answers[key]
                else:
                    status, payload = self._answer(path, headers, form)
                    data = json.dumps(payload).encode()
                    if key is not None and status < 500 and status != 429:
                        self._answers[key] = (status, data)
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ThreadedStripe() -> InThread[FakeStripe]:
    return InThread(FakeStripe())
