"""Rate limiter and concurrency guard on Redis: one Lua script per decision, one round trip,
reading the Redis server's clock so that every instance decides on the same time. A run's
rate counters and its concurrency places are one decision (``admit``); the leases of the
runs an instance executes are renewed a slice of holders per round trip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters.redis.client import Lua, RedisStore
from application.quota.ports import (
    Admission,
    Lease,
    RateCheck,
    RateDecision,
    Slot,
    decision_of,
)
from domain.quota.rate_limit import decide_all

_NOW = """
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end
"""

# KEYS: the rate counters (ARGV[3] of them), then the slots, all in one slot of the cluster.
# ARGV: cost, now in µs ('' = the server's clock), the number of counters, each counter's
# emission interval and tolerance (µs), then the holder, its lease (µs) and each slot's cap.
# The counters are the domain's GCRA (integers below 2^53, exact in Lua's doubles): the
# request is checked against every counter before any is touched; refused, nothing changes.
# Admitted, each counter's TAT moves (and expires when it has passed), then the holder takes a
# place under every slot or under none. A slot is a sorted set of holders scored by their
# lease deadline (µs, server clock). Returns {admitted, acquired, now, old TAT of each
# counter}, so that the caller rebuilds the full rate outcome.
_ADMIT = Lua(
    _NOW
    + """
local cost, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local out = {1, 0, now}
local new = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 + 2 * i])
  local tolerance = tonumber(ARGV[3 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  local tat = 0
  if stored then tat = tonumber(stored) end
  out[3 + i] = tat
  local new_tat = math.max(tat, now) + cost * interval
  new[i] = new_tat
  if new_tat - now > tolerance then out[1] = 0 end
end
if out[1] == 0 then return out end
-- A counter lives until its TAT has passed (then it decides nothing). On a clock the caller
-- gives, that time is not Redis's: the key is kept a minute longer, as a key that outlives its
-- TAT changes no decision and one that expires early would.
local margin = 1
if ARGV[2] ~= '' then margin = 60000 end
for i = 1, n do
  local ttl = math.floor((new[i] - now) / 1000) + margin
  redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', string.format('%.0f', ttl))
end
local base = 4 + 2 * n
local holder, lease = ARGV[base], tonumber(ARGV[base + 1])
for j = n + 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', string.format('%.0f', now))
  if not redis.call('ZSCORE', KEYS[j], holder) and
     redis.call('ZCARD', KEYS[j]) >= tonumber(ARGV[base + 1 + j - n]) then
    return out
  end
end
local deadline = string.format('%.0f', now + lease)
local ttl = string.format('%.0f', math.floor(lease / 1000) + 1000)
for j = n + 1, #KEYS do
  redis.call('ZADD', KEYS[j], deadline, holder)
  redis.call('PEXPIRE', KEYS[j], ttl)
end
out[2] = 1
return out
"""
)

# KEYS: slots of one partition. ARGV: lease µs, now ('' = server clock), then for each holder
# the index in KEYS of one of its slots and the holder. Only holders still in place move on.
_RENEW = Lua(
    _NOW
    + """
local deadline = string.format('%.0f', now + tonumber(ARGV[1]))
local ttl = string.format('%.0f', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
end
for j = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[tonumber(ARGV[j])], 'XX', deadline, ARGV[j + 1])
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
"""
)
# Holders renewed per script call: one call blocks Redis for a bounded time.
_RENEW_CHUNK = 250

# KEYS[1]: a slot. ARGV: unused, now ('' = server clock).
_HELD = Lua(
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZCARD', KEYS[1])
"""
)


class _Admitter:
    """Runs ``_ADMIT``: the rate limiter's and the guard's decisions are its special cases."""

    def __init__(self, store: RedisStore, clock_us: Callable[[], int] | None) -> None:
        self._store = store
        self._clock_us = clock_us

    def now(self) -> int | str:
        return "" if self._clock_us is None else self._clock_us()

    async def __call__(
        self,
        what: str,
        partition: str,
        checks: Sequence[RateCheck],
        slots: Sequence[Slot] = (),
        holder: str = "",
        lease_s: float = 0.0,
        cost: int = 1,
    ) -> tuple[RateDecision, bool]:
        store = self._store
        keys = [store.key(partition, "rl", c.key) for c in checks]
        keys += [store.key(partition, "cc", s.key) for s in slots]
        args: list[int | str] = [cost, self.now(), len(checks)]
        for c in checks:
            args += [c.rule.interval_us, c.rule.tolerance_us]
        args += [holder, int(lease_s * 1_000_000), *(s.cap for s in slots)]
        reply = await store.eval(what, _ADMIT, keys, args)
        now, tats = int(reply[2]), [int(t) for t in reply[3:]]
        allowed, outcomes = decide_all(
            [(c.rule, t) for c, t in zip(checks, tats, strict=True)], now, cost
        )
        if allowed != bool(int(reply[0])):  # the script and the domain disagree: a defect
            raise AssertionError("the Redis GCRA script and the domain model disagree")
        return decision_of(checks, allowed, outcomes), bool(int(reply[1]))


class RedisRateLimiter:
    """Shares its counters with every instance on the same Redis. ``clock_us`` is for tests
    that drive a virtual clock; left unset, the script reads the server's ``TIME``."""

    def __init__(self, store: RedisStore, *, clock_us: Callable[[], int] | None = None) -> None:
        self._admit = _Admitter(store, clock_us)

    async def hit(
        self, partition: str, checks: Sequence[RateCheck], *, cost: int = 1
    ) -> RateDecision:
        decision, _ = await self._admit("rate limit", partition, checks, cost=cost)
        return decision


class RedisConcurrencyGuard:
    def __init__(self, store: RedisStore, *, clock_us: Callable[[], int] | None = None) -> None:
        self._store = store
        self._admit = _Admitter(store, clock_us)

    async def acquire(
        self, partition: str, slots: Sequence[Slot], holder: str, *, lease_s: float
    ) -> bool:
        _, acquired = await self._admit("acquire", partition, (), slots, holder, lease_s)
        return acquired

    async def admit(
        self,
        partition: str,
        checks: Sequence[RateCheck],
        slots: Sequence[Slot],
        holder: str,
        *,
        lease_s: float,
    ) -> Admission:
        decision, acquired = await self._admit(
            "admit run", partition, checks, slots, holder, lease_s
        )
        return Admission(decision=decision, acquired=acquired)

    async def renew(self, leases: Sequence[Lease], *, lease_s: float) -> None:
        """One script call per partition and per ``_RENEW_CHUNK`` holders, each its own round
        trip: thousands of held runs are renewed in slices, between which this process serves
        requests and Redis serves other clients."""
        by_partition: dict[str, list[Lease]] = {}
        for lease in leases:
            if lease.keys:
                by_partition.setdefault(lease.partition, []).append(lease)
        args_head: list[int | str] = [int(lease_s * 1_000_000), self._admit.now()]
        for partition, group in by_partition.items():
            for i in range(0, len(group), _RENEW_CHUNK):
                index: dict[str, int] = {}
                args = list(args_head)
                for lease in group[i : i + _RENEW_CHUNK]:
                    for key in lease.keys:
                        args += [index.setdefault(key, len(index) + 1), lease.holder]
                keys = [self._store.key(partition, "cc", k) for k in index]
                await self._store.eval("renew", _RENEW, keys, args)

    async def release(self, partition: str, keys: Sequence[str], holder: str) -> None:
        commands = [("ZREM", self._store.key(partition, "cc", k), holder) for k in keys]
        if commands:
            await self._store.call("release", commands)

    async def held(self, partition: str, key: str) -> int:
        full = [self._store.key(partition, "cc", key)]
        reply = await self._store.eval("held", _HELD, full, [0, self._admit.now()])
        return int(reply)
