"""Idempotency keys on Redis: one hash per key, claimed, completed and released by scripts so
that concurrent instances agree on which request holds a key."""

from __future__ import annotations

import msgspec

from adapters.redis.client import Lua, RedisStore
from application.ports import Claim, ClaimOutcome, StoredResponse

# KEYS[1]: the key's hash. ARGV: fingerprint, lock ms.
_CLAIM = Lua("""local cur = redis.call('HMGET', KEYS[1], 'fp', 'state', 'response')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'running')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'started'}
end
if cur[1] ~= ARGV[1] then return {'mismatch'} end
if cur[2] == 'running' then return {'in_flight'} end
return {'replay', cur[3]}
""")

# ARGV: fingerprint, response, retention ms. Only the holder's running claim completes.
_COMPLETE = Lua("""local cur = redis.call('HMGET', KEYS[1], 'fp', 'state')
if cur[1] == ARGV[1] and cur[2] == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
""")

_RELEASE = Lua("""local cur = redis.call('HMGET', KEYS[1], 'fp', 'state')
if cur[1] == ARGV[1] and cur[2] == 'running' then return redis.call('DEL', KEYS[1]) end
return 0
""")


class _Wire(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Wire).decode


class RedisIdempotencyStore:
    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def _key(self, scope: str, key: str) -> str:
        return self._store.key(f"i:{scope}", key)

    async def claim(self, scope: str, key: str, fingerprint: str, *, lock_s: float) -> Claim:
        keys, args = [self._key(scope, key)], [fingerprint, max(1, int(lock_s * 1000))]
        reply = await self._store.eval("idempotency claim", _CLAIM, keys, args)
        outcome = ClaimOutcome(reply[0].decode())
        if outcome is not ClaimOutcome.REPLAY:
            return Claim(outcome)
        wire = _decode(reply[1])
        return Claim(
            outcome,
            StoredResponse(status=wire.status, headers=tuple(wire.headers), body=wire.body),
        )

    async def complete(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        *,
        retention_s: float,
    ) -> None:
        value = _encode(_Wire(response.status, list(response.headers), response.body))
        keys = [self._key(scope, key)]
        args = [fingerprint, value, max(1, int(retention_s * 1000))]
        await self._store.eval("idempotency complete", _COMPLETE, keys, args)

    async def release(self, scope: str, key: str, fingerprint: str) -> None:
        keys = [self._key(scope, key)]
        await self._store.eval("idempotency release", _RELEASE, keys, [fingerprint])
