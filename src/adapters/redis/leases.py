"""Run leases on Redis, shared by every instance of a deployment: one sorted set of runs
scored by their lease deadline (ms, on the Redis server's clock, so instances' clocks do not
matter). Holding and releasing are one command each; each instance renews the leases of all
the runs it executes in one script call every third of a term; claiming lapsed runs is one
script, so each is handed to exactly one instance, which holds it for one more term.

A renewal adds leases that are missing, so a Redis that restarted empty gets the live runs'
leases back within a third of a term; the runs of an instance that died meanwhile have none
and are ended by no one (the log of such a run expires, and its record stays pending)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from adapters.redis.client import Lua, RedisStore
from application.errors import ServiceUnavailable
from domain.ids import RunId, TenantId

log = logging.getLogger("sba.runs")

_SEP = "\x1f"  # no printable id contains it

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS[1]: the lease set. ARGV[1]: the term (ms); ARGV[2] NX or XX ('' for neither); then
# members. Returns how many were added.
_HOLD = Lua(
    _NOW
    + """
local deadline = string.format('%.0f', now + tonumber(ARGV[1]))
local added = 0
for i = 3, #ARGV do
  if ARGV[2] == 'NX' then
    added = added + redis.call('ZADD', KEYS[1], 'NX', deadline, ARGV[i])
  else
    added = added + redis.call('ZADD', KEYS[1], deadline, ARGV[i])
  end
end
return added
"""
)
# KEYS[1]: the lease set. ARGV: the term (ms), the most to claim. Lapsed members are held for
# one more term for the caller and returned.
_CLAIM = Lua(
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local deadline = string.format('%.0f', now + tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', deadline, member)
end
return due
"""
)

_RENEW_CHUNK = 250


class RedisRunLeases:
    def __init__(self, store: RedisStore, *, term_s: float = 10.0) -> None:
        self._store = store
        self.term_s = term_s
        self._term_ms = int(term_s * 1000)
        self._key = store.key("leases", "runs")
        self._held: set[str] = set()
        self._released: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    @staticmethod
    def _member(tenant_id: TenantId, run_id: RunId) -> str:
        return f"{tenant_id}{_SEP}{run_id}"

    async def hold(self, tenant_id: TenantId, run_id: RunId) -> bool:
        member = self._member(tenant_id, run_id)
        added = await self._call("lease hold", _HOLD, (self._term_ms, "NX", member))
        if added:
            self._held.add(member)
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return bool(added)

    async def release(self, tenant_id: TenantId, run_id: RunId) -> None:
        """Given up with the next renewal, not at once: by then the run's last events, written
        behind, are in its stream, and one command serves every run that ended meanwhile. An
        instance that dies first leaves the lease to lapse; the sweep that claims it finds the
        run ended."""
        member = self._member(tenant_id, run_id)
        if member in self._held:
            self._held.discard(member)
            self._released.add(member)
        else:  # a lapsed lease claimed by this instance's sweep
            await self._store.call("lease release", [("ZREM", self._key, member)])

    async def claim_lapsed(self, *, limit: int) -> list[tuple[TenantId, RunId]]:
        claimed = await self._call("lease claim", _CLAIM, (self._term_ms, limit))
        out: list[tuple[TenantId, RunId]] = []
        for raw in claimed:
            tenant, _, run = (raw.decode() if isinstance(raw, bytes) else raw).partition(_SEP)
            out.append((TenantId(tenant), RunId(run)))
        return out

    async def renew(self) -> None:
        """Renews the leases of the runs this instance executes and gives up those it
        released since the last renewal."""
        released, self._released = list(self._released), set()
        if released:
            try:
                await self._store.call("lease release", [("ZREM", self._key, *released)])
            except ServiceUnavailable:
                self._released.update(released)
                raise
        held = list(self._held)
        for i in range(0, len(held), _RENEW_CHUNK):
            await self._call("lease renew", _HOLD, (self._term_ms, "", *held[i : i + _RENEW_CHUNK]))

    async def _call(self, what: str, script: Lua, args: Sequence[object]) -> Any:
        return await self._store.eval(what, script, [self._key], args)

    async def _renew_forever(self) -> None:
        while self._held or self._released:
            await asyncio.sleep(self.term_s / 3)
            try:
                await self.renew()
            except ServiceUnavailable as exc:
                log.warning("run leases not renewed: %s", exc.message)
