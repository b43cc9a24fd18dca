"""Failed authentications, held to a low limit of their own (ADR 0040).

The request limits are sized for honest traffic (6,000 a minute per address), so a client
guessing credentials was never slowed down. Failures are counted here instead, per client
address and per API-key prefix (the public half of a key, so guesses at one key from many
addresses add up too), on the shared rate limiter. Once a counter is used up, its address or
prefix is refused before its credential is even looked at, until the counter frees up: a guess
that happens to be right is refused too, or the refusal would tell a right guess from a wrong
one.

Only failures are counted, and the limiter counts only what it admits, so the refusal is
remembered in this process until the counter frees up; another instance learns it from its own
next failure there. A blocked key prefix locks its key's holder out as well while the guessing
goes on: that is the price of stopping guesses spread over many addresses."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from application.errors import RateLimited, ServiceUnavailable
from application.quota.ports import RateCheck, RateLimiter
from domain.quota.rate_limit import RateLimitRule

log = logging.getLogger("sba.auth")

WINDOW_S = 60.0
CODE = "authentication_limited"
# A store outage is logged at most this often.
_LOG_EVERY_S = 10.0


class AuthFailureLimit:
    """``check`` before authenticating (raises ``RateLimited`` while the address or key prefix
    is refused); ``failed`` after a credential was refused (counts it, and raises
    ``RateLimited`` when that used the last of a counter). A limit of zero is off."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        per_address_per_minute: int,
        per_key_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_refused: int = 100_000,
    ) -> None:
        self._limiter = limiter
        # The whole minute's allowance may be used at once: people mistype keys in bursts.
        self._address = self._rule(per_address_per_minute)
        self._key = self._rule(per_key_per_minute)
        self._clock = clock
        self._max = max_refused
        # (kind, value) -> when its counter frees up (clock seconds).
        self._refused: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._logged_at = -_LOG_EVERY_S

    @staticmethod
    def _rule(per_minute: int) -> RateLimitRule | None:
        if per_minute <= 0:
            return None
        return RateLimitRule(limit=per_minute, window_s=WINDOW_S, burst=per_minute)

    def _counters(self, address: str, prefix: str | None) -> list[tuple[str, str, RateLimitRule]]:
        out = []
        if self._address is not None:
            out.append(("address", address, self._address))
        if self._key is not None and prefix:
            out.append(("key", prefix, self._key))
        return out

    def check(self, address: str, prefix: str | None) -> None:
        now = self._clock()
        for kind, value, _ in self._counters(address, prefix):
            until = self._refused.get((kind, value))
            if until is None:
                continue
            if until <= now:
                del self._refused[(kind, value)]
                continue
            raise self._refusal(kind, until - now)

    async def failed(self, address: str, prefix: str | None) -> None:
        for kind, value, rule in self._counters(address, prefix):
            check = RateCheck(policy=f"auth-{kind}", key="failed", rule=rule)
            try:
                decision = await self._limiter.hit(f"f{kind[0]}:{value}", (check,))
            except ServiceUnavailable as exc:
                self._store_failed(exc)
                return
            if not decision.allowed:
                # Rounded up to the millisecond: when the refusal ends, the counter has room.
                wait_s = math.ceil(decision.retry_after_s * 1000) / 1000
                self._remember((kind, value), self._clock() + wait_s)
                log.warning(
                    "failed authentications: the %s %s is refused for %.0f s",
                    kind,
                    value,
                    wait_s,
                )
                raise self._refusal(kind, wait_s)

    def _remember(self, counter: tuple[str, str], until: float) -> None:
        self._refused[counter] = until
        self._refused.move_to_end(counter)
        if len(self._refused) > self._max:
            now = self._clock()
            for stale in [c for c, t in self._refused.items() if t <= now]:
                del self._refused[stale]
            while len(self._refused) > self._max:
                self._refused.popitem(last=False)

    @staticmethod
    def _refusal(kind: str, wait_s: float) -> RateLimited:
        who = "this client address" if kind == "address" else "this API key"
        return RateLimited(
            f"too many failed authentications from {who}; retry later",
            retry_after_s=max(wait_s, 1.0),
            code=CODE,
        )

    def _store_failed(self, exc: ServiceUnavailable) -> None:
        # A failure is answered 401 either way; only its counting is lost.
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning("failed authentications cannot be counted: %s", exc.message)
