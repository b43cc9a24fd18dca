"""In-process cache: least recently used entries go first past ``max_entries``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from application.ports import CacheStats

_Key = tuple[str, str]


class MemoryCache:
    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[_Key, tuple[float, bytes, tuple[str, ...]]] = OrderedDict()
        self._tagged: dict[tuple[str, str], set[str]] = {}
        self._max = max_entries
        self.stats = CacheStats()

    async def get(self, scope: str, key: str) -> bytes | None:
        entry = self._entries.get((scope, key))
        if entry is None or entry[0] <= time.monotonic():
            if entry is not None:
                self._drop((scope, key))
            self.stats.misses += 1
            return None
        self._entries.move_to_end((scope, key))
        self.stats.hits += 1
        return entry[1]

    async def set(
        self, scope: str, key: str, value: bytes, *, ttl_s: float, tags: Sequence[str] = ()
    ) -> None:
        if (scope, key) in self._entries:
            self._drop((scope, key))
        self._entries[(scope, key)] = (time.monotonic() + ttl_s, value, tuple(tags))
        for tag in tags:
            self._tagged.setdefault((scope, tag), set()).add(key)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    async def invalidate(self, scope: str, tags: Sequence[str]) -> int:
        dropped = 0
        for tag in tags:
            for key in self._tagged.pop((scope, tag), set()):
                if (scope, key) in self._entries:
                    self._drop((scope, key))
                    dropped += 1
        self.stats.invalidated += dropped
        return dropped

    def _drop(self, full: _Key) -> None:
        _, _, tags = self._entries.pop(full)
        for tag in tags:
            keys = self._tagged.get((full[0], tag))
            if keys is not None:
                keys.discard(full[1])
                if not keys:
                    del self._tagged[(full[0], tag)]

    def __len__(self) -> int:
        return len(self._entries)
