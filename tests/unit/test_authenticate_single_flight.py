"""Requests carrying the same credential while it is being verified share one verification:
a burst that arrives as the cache entry expires costs one look-up, not one per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from adapters.memory.clock import SystemClock
from adapters.memory.persistence import MemoryUnitOfWork
from application.errors import Unauthenticated
from application.tenancy.use_cases import Authenticate, CreateApiKey, CreateTenant
from domain.tenancy.model import Role


class CountedLookups:
    """A memory unit of work whose key look-ups are counted and wait until ``opened``."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self._inner = inner
        self.lookups = 0
        self.opened = asyncio.Event()

    def key_transaction(self, key_prefix: str) -> AbstractAsyncContextManager[Any]:
        self.lookups += 1
        return self._gated(key_prefix)

    @asynccontextmanager
    async def _gated(self, key_prefix: str) -> AsyncIterator[Any]:
        await self.opened.wait()
        async with self._inner.key_transaction(key_prefix) as tx:
            yield tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def setup() -> tuple[CountedLookups, Authenticate, str, str]:
    uow = MemoryUnitOfWork()
    clock = SystemClock()
    await CreateTenant(uow, clock)("acme", actor="test")
    first = await CreateApiKey(uow, clock)("acme", Role.ADMIN, actor="test")
    second = await CreateApiKey(uow, clock)("acme", Role.MEMBER, actor="test")
    counted = CountedLookups(uow)
    return counted, Authenticate(counted, clock), first.plaintext, second.plaintext  # type: ignore[arg-type]


async def test_a_burst_with_one_key_costs_one_look_up() -> None:
    uow, authenticate, key, _ = await setup()
    burst = [asyncio.create_task(authenticate(key)) for _ in range(20)]
    await asyncio.sleep(0)
    uow.opened.set()
    principals = await asyncio.gather(*burst)
    assert uow.lookups == 1
    assert len({(p.tenant_id, p.subject, p.role) for p in principals}) == 1
    await authenticate(key)  # remembered now
    assert uow.lookups == 1


async def test_a_wrong_key_is_refused_for_every_request_of_the_burst_after_one_look_up() -> None:
    uow, authenticate, key, _ = await setup()
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    burst = [asyncio.create_task(authenticate(wrong)) for _ in range(5)]
    await asyncio.sleep(0)
    uow.opened.set()
    outcomes = await asyncio.gather(*burst, return_exceptions=True)
    assert all(isinstance(o, Unauthenticated) for o in outcomes)
    assert uow.lookups == 1


async def test_different_keys_are_verified_apart() -> None:
    uow, authenticate, first, second = await setup()
    burst = [asyncio.create_task(authenticate(k)) for k in (first, second, first, second)]
    await asyncio.sleep(0)
    uow.opened.set()
    principals = await asyncio.gather(*burst)
    assert uow.lookups == 2
    assert principals[0].subject != principals[1].subject
    assert principals[0] == principals[2] and principals[1] == principals[3]


async def test_a_request_that_gives_up_does_not_cancel_the_others_verification() -> None:
    uow, authenticate, key, _ = await setup()
    gone = asyncio.create_task(authenticate(key))
    kept = asyncio.create_task(authenticate(key))
    await asyncio.sleep(0)
    gone.cancel()
    uow.opened.set()
    principal = await kept
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert principal.tenant_id and uow.lookups == 1
