"""Digests remembered for a window, in one process."""

from __future__ import annotations

import time
from collections.abc import Callable


class MemoryReplayGuard:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000):
        self._seen: dict[tuple[str, str], float] = {}
        self._clock = clock
        self._max = max_entries

    async def first_seen(self, scope: str, digest: str, *, window_s: float) -> bool:
        now = self._clock()
        key = (scope, digest)
        until = self._seen.get(key)
        if until is not None and until > now:
            return False
        if len(self._seen) >= self._max:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            while len(self._seen) >= self._max:
                self._seen.pop(next(iter(self._seen)))
        self._seen[key] = now + window_s
        return True
