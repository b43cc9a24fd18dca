"""In-process idempotency keys: one process's memory, expired lazily and bounded."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from application.ports import Claim, ClaimOutcome, StoredResponse


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    expires: float
    response: StoredResponse | None = None


class MemoryIdempotencyStore:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._clock = clock
        self._max = max_keys

    def _live(self, full: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(full)
        if entry is not None and entry.expires <= self._clock():
            del self._entries[full]
            return None
        return entry

    async def claim(self, scope: str, key: str, fingerprint: str, *, lock_s: float) -> Claim:
        full = (scope, key)
        entry = self._live(full)
        if entry is None:
            self._entries[full] = _Entry(fingerprint, self._clock() + lock_s)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return Claim(ClaimOutcome.STARTED)
        if entry.fingerprint != fingerprint:
            return Claim(ClaimOutcome.MISMATCH)
        if entry.response is None:
            return Claim(ClaimOutcome.IN_FLIGHT)
        return Claim(ClaimOutcome.REPLAY, entry.response)

    async def complete(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        *,
        retention_s: float,
    ) -> None:
        entry = self._live((scope, key))
        if entry is not None and entry.fingerprint == fingerprint and entry.response is None:
            entry.response = response
            entry.expires = self._clock() + retention_s

    async def release(self, scope: str, key: str, fingerprint: str) -> None:
        entry = self._live((scope, key))
        if entry is not None and entry.fingerprint == fingerprint and entry.response is None:
            del self._entries[(scope, key)]
