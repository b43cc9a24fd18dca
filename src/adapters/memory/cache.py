"""In-process response cache with expiry and a size bound."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from application.conversation.ports import ChatChunk


class MemoryResponseCache:
    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, tuple[ChatChunk, ...]]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> Sequence[ChatChunk] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, chunks = entry
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return chunks

    async def set(self, key: str, chunks: Sequence[ChatChunk], ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, tuple(chunks))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
