"""Cache on Redis. An entry and its scope's tag sets share one hash tag, so a write (value,
expiry, tags) and an invalidation (every tagged entry, then the tag) are each one atomic
script in one cluster slot; a concurrent write can never survive an invalidation it raced."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.redis.client import Lua, RedisStore
from application.ports import CacheStats

# KEYS[1]: the entry; KEYS[2..]: its tag sets. ARGV: value, ttl ms. A tag set lives as long as
# its longest-lived entry.
_SET = Lua("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
""")

# KEYS: tag sets. Deletes every member entry and the sets; returns how many entries existed.
_INVALIDATE = Lua("""
local dropped = 0
for i = 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 500 do
    dropped = dropped + redis.call('DEL', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('DEL', KEYS[i])
end
return dropped
""")


class RedisCache:
    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.stats = CacheStats()

    def _entry(self, scope: str, key: str) -> str:
        return self._store.key(f"c:{scope}", "e", key)

    def _tag(self, scope: str, tag: str) -> str:
        return self._store.key(f"c:{scope}", "tag", tag)

    async def get(self, scope: str, key: str) -> bytes | None:
        try:
            replies = await self._store.call("cache read", [("GET", self._entry(scope, key))])
            value: bytes | None = replies[0]
        except Exception:
            self.stats.errors += 1
            raise
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    async def set(
        self, scope: str, key: str, value: bytes, *, ttl_s: float, tags: Sequence[str] = ()
    ) -> None:
        keys = [self._entry(scope, key), *(self._tag(scope, t) for t in tags)]
        args = [value, max(1, int(ttl_s * 1000))]
        try:
            await self._store.eval("cache write", _SET, keys, args)
        except Exception:
            self.stats.errors += 1
            raise

    async def invalidate(self, scope: str, tags: Sequence[str]) -> int:
        if not tags:
            return 0
        keys = [self._tag(scope, t) for t in tags]
        dropped = int(await self._store.eval("cache invalidation", _INVALIDATE, keys, ()))
        self.stats.invalidated += dropped
        return dropped
