"""Runs a local fake server (anything with ``async start()`` and ``async stop()``) on an event
loop of its own, in a thread: for an app whose test client blocks the test's loop while a
request is in flight, so a fake the app calls cannot share that loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, Protocol, TypeVar


class Startable(Protocol):
    async def start(self) -> object: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


class InThread(Generic[S]):
    def __init__(self, server: S) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> S:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
