"""A stand-in for Stripe's meter events endpoint over real HTTP, on a loop of its own in a
thread: form-encoded ``POST /v1/billing/meter_events`` with a bearer secret key, answered in
the documented shape (``object: billing.meter_event`` …), errors as ``{"error": {type,
message}}``, and Stripe's idempotency: a request repeating an ``Idempotency-Key`` gets the first
answer back and is not counted again."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from tests.http_fake import Answer, Request, json_answer, serve
from tests.in_thread import InThread

SECRET = "sk_test_51SbaFakeKey0000"


class FakeStripe:
    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []  # counted meter events
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.statuses: list[int] = []  # answered before the real answer
        self._answers: dict[str, Answer] = {}
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
        await serve(reader, writer, self._handle)

    async def _handle(self, r: Request) -> Answer:
        form = dict(parse_qsl(r.body.decode()))
        self.requests.append((r.path, r.headers, form))
        key = r.headers.get("idempotency-key")
        if key is not None and key in self._answers:
            return self._answers[key]
        answer = json_answer(*self._answer(r.path, r.headers, form))
        if key is not None and answer.status < 500 and answer.status != 429:
            self._answers[key] = answer
        return answer


def ThreadedStripe() -> InThread[FakeStripe]:
    return InThread(FakeStripe())
