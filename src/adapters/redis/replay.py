"""Digests remembered for a window on Redis: ``SET NX PX``, one round trip, atomic across
instances."""

from __future__ import annotations

from adapters.redis.client import RedisStore


class RedisReplayGuard:
    def __init__(self, store: RedisStore) -> None:
        self._store = store

    async def first_seen(self, scope: str, digest: str, *, window_s: float) -> bool:
        key = self._store.key(f"r:{scope}", digest)
        ms = max(int(window_s * 1000), 1)
        replies = await self._store.call("replay check", [("SET", key, b"1", "NX", "PX", ms)])
        return replies[0] is not None  # OK when set, nil when the digest was there
