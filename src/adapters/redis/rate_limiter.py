"""Rate limiter and concurrency guard on Redis: one Lua script per decision, one round trip,
reading the Redis server's clock so that every instance decides on the same time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters.redis.client import RedisStore
from application.quota.ports import RateCheck, RateDecision, Slot, decision_of
from domain.quota.rate_limit import decide_all

# KEYS: the counters, all in one slot. ARGV: cost, now in µs ('' = the server's clock), then
# the emission interval and tolerance (µs) of each counter. The arithmetic is the domain's GCRA
# (integers below 2^53, exact in Lua's doubles): the request is checked against every counter
# before any is touched; admitted, each counter's TAT moves and expires when it has passed.
# Returns {admitted, now, old TAT of each counter} so the caller rebuilds the full outcome.
_GCRA = """
local cost = tonumber(ARGV[1])
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end
local out = {1, now}
local new = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  local tat = 0
  if stored then tat = tonumber(stored) end
  out[2 + i] = tat
  local new_tat = math.max(tat, now) + cost * interval
  new[i] = new_tat
  if new_tat - now > tolerance then out[1] = 0 end
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local ttl = math.floor((new[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', string.format('%.0f', ttl))
  end
end
return out
"""

# Concurrency slots: one sorted set per slot, holders scored by their lease deadline (µs,
# server clock). KEYS: the slots. ARGV: holder, lease µs, now ('' = server clock), caps.
_NOW = """
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
"""

_ACQUIRE = (
    _NOW
    + """
local holder, lease = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
  if not redis.call('ZSCORE', KEYS[i], holder) and
     redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[3 + i]) then
    return 0
  end
end
local deadline = string.format('%.0f', now + lease)
local ttl = string.format('%.0f', math.floor(lease / 1000) + 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], deadline, holder)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
"""
)

_RENEW = (
    _NOW
    + """
local holder, lease = ARGV[1], tonumber(ARGV[2])
local deadline = string.format('%.0f', now + lease)
local ttl = string.format('%.0f', math.floor(lease / 1000) + 1000)
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', deadline, holder) == 1 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
"""
)

_HELD = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZCARD', KEYS[1])
"""
)


class RedisRateLimiter:
    """Shares its counters with every instance on the same Redis. ``clock_us`` is for tests
    that drive a virtual clock; left unset, the script reads the server's ``TIME``."""

    def __init__(self, store: RedisStore, *, clock_us: Callable[[], int] | None = None) -> None:
        self._store = store
        self._script = store.script(_GCRA)
        self._clock_us = clock_us

    async def hit(
        self, partition: str, checks: Sequence[RateCheck], *, cost: int = 1
    ) -> RateDecision:
        store = self._store
        keys = [store.key(partition, "rl", c.key) for c in checks]
        args: list[int | str] = [cost, "" if self._clock_us is None else self._clock_us()]
        for c in checks:
            args += [c.rule.interval_us, c.rule.tolerance_us]
        reply = await store.run("rate limit", lambda: self._script(keys=keys, args=args))
        now, tats = int(reply[1]), [int(t) for t in reply[2:]]
        allowed, outcomes = decide_all(
            [(c.rule, t) for c, t in zip(checks, tats, strict=True)], now, cost
        )
        if allowed != bool(int(reply[0])):  # the script and the domain disagree: a defect
            raise AssertionError("the Redis GCRA script and the domain model disagree")
        return decision_of(checks, allowed, outcomes)


class RedisConcurrencyGuard:
    def __init__(self, store: RedisStore, *, clock_us: Callable[[], int] | None = None) -> None:
        self._store = store
        self._acquire = store.script(_ACQUIRE)
        self._renew = store.script(_RENEW)
        self._held = store.script(_HELD)
        self._clock_us = clock_us

    def _now(self) -> int | str:
        return "" if self._clock_us is None else self._clock_us()

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool:
        keys = [self._store.key(partition, "cc", s.key) for s in slots]
        args = [holder, int(lease_s * 1_000_000), self._now(), *(s.cap for s in slots)]
        reply = await self._store.run("acquire", lambda: self._acquire(keys=keys, args=args))
        return bool(int(reply))

    async def renew(
        self, partition: str, keys: Sequence[str], holder: str, *, lease_s: float
    ) -> None:
        full = [self._store.key(partition, "cc", k) for k in keys]
        args = [holder, int(lease_s * 1_000_000), self._now()]
        await self._store.run("renew", lambda: self._renew(keys=full, args=args))

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None:
        client = self._store.client

        async def release_all() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.zrem(self._store.key(partition, "cc", k), holder)
                await pipe.execute()

        await self._store.run("release", release_all)

    async def held(self, partition: str, key: str) -> int:
        full = [self._store.key(partition, "cc", key)]
        reply = await self._store.run(
            "held", lambda: self._held(keys=full, args=["", 0, self._now()])
        )
        return int(reply)
