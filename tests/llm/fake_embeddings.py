"""An OpenAI-compatible embeddings endpoint on 127.0.0.1, on a loop of its own in a thread
(the app's test client blocks the test's loop while a request is in flight). It answers in the
documented shape with "concept" vectors: words of one meaning share a dimension, so
"holiday" and "vacation" embed alike, as a real model would place them."""

from __future__ import annotations

import asyncio
import json
import re

from tests.http_fake import Answer, Request, json_answer, serve
from tests.in_thread import InThread

CONCEPTS = {
    "vacation": 0,
    "holiday": 0,
    "holidays": 0,
    "leave": 0,
    "refund": 1,
    "refunds": 1,
    "money": 1,
    "invoice": 2,
    "invoices": 2,
}
DIMENSIONS = len(set(CONCEPTS.values())) + 1


def concept_vector(text: str) -> list[float]:
    v = [0.01] * DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        if word in CONCEPTS:
            v[CONCEPTS[word]] += 1.0
    return v


class FakeEmbeddings:
    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeEmbeddings:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _answer(self, path: str, body: bytes) -> tuple[int, dict]:
        if path != "/v1/embeddings":
            return 404, {"error": {"message": f"no route {path}"}}
        if self.down:
            return 503, {"error": {"message": "The server is overloaded", "type": "server_error"}}
        request = json.loads(body)
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        self.inputs.append(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": concept_vector(t)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return 200, {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(reader, writer, self._handle)

    async def _handle(self, request: Request) -> Answer:
        return json_answer(*self._answer(request.path, request.body))


def ThreadedEmbeddings() -> InThread[FakeEmbeddings]:
    return InThread(FakeEmbeddings())
