"""A fake BaseHub GraphQL endpoint on 127.0.0.1, over real HTTP/1.1. It answers the queries the
adapter sends in the shape BaseHub documents for a list block: ``{"data": {"<list>":
{"_meta": {"totalCount": n}, "items": [{"_id", "_title", "_slug", "_sys": {...},
"<richText>": {"markdown": ...}}]}}}``, and GraphQL errors as ``{"errors": [{"message"}]}``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.http_fake import Answer, Request, json_answer, serve
from tests.in_thread import InThread

TOKEN = "bshb_pk_test"


@dataclass
class FakeBaseHub:
    collection: str = "documents"
    docs: dict[str, dict[str, str]] = field(default_factory=dict)
    fetched: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered before the real answer
    drift: bool = False
    hold: asyncio.Event | None = None  # when set, requests wait for it
    held: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def put(self, ref: str, title: str, markdown: str) -> None:
        self.docs[ref] = {"title": title, "markdown": markdown}

    def release(self) -> None:
        """Lets held requests go on (from any thread), and holds no more."""
        hold, self.hold = self.hold, None
        if hold is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(hold.set)

    async def start(self) -> FakeBaseHub:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _item(self, ref: str) -> dict[str, Any]:
        d = self.docs[ref]
        return {
            "_id": ref,
            "_title": 5 if self.drift else d["title"],
            "_slug": ref.lower(),
            "_sys": {"lastModifiedAt": "2026-11-25T10:00:00.000Z"},
            "body": {"markdown": d["markdown"]},
        }

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        v = request.get("variables") or {}
        query = request.get("query", "")
        if f"{self.collection}(" not in query:
            return {"errors": [{"message": "Cannot query field on type Query"}]}
        refs = sorted(self.docs)
        if "id" in v:
            chosen = [v["id"]] if v["id"] in self.docs else []
            self.fetched[v["id"]] += 1
        elif "q" in v:
            chosen = [r for r in refs if v["q"].lower() in self.docs[r]["title"].lower()]
            chosen = chosen[: v["first"]]
        else:
            chosen = refs[v["skip"] : v["skip"] + v["first"]]
        return {
            "data": {
                self.collection: {
                    "_meta": {"totalCount": len(refs)},
                    "items": [self._item(r) for r in chosen],
                }
            }
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(reader, writer, self._handle)

    async def _handle(self, http: Request) -> Answer:
        request = json.loads(http.body)
        self.requests.append({"headers": http.headers, **request})
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        if http.headers.get("x-basehub-token") != TOKEN:
            return json_answer(401, {"error": "Unauthorized"})
        if self.statuses:
            return json_answer(self.statuses.pop(0), {"error": "try again"})
        return json_answer(200, self._answer(request))


def ThreadedBaseHub() -> InThread[FakeBaseHub]:
    """The fake on a loop of its own, in a thread (see ``tests.in_thread``)."""
    return InThread(FakeBaseHub())
