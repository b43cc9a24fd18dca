"""AuditTrail contract on every unit of work (memory, SQLite, Postgres, Postgres behind a
transaction pooler): entries chain per tenant, commit or roll back with their transaction,
concurrent appends never collide, and a tenant's transaction reaches only its own trail."""

from __future__ import annotations

import asyncio

import pytest

from application.errors import TenantScopeViolation
from domain.audit.model import GENESIS, AuditEvent, verify
from domain.ids import TenantId
from domain.tenancy.model import Tenant
from tests.contract.conftest import open_uow

A, B = TenantId("ten_a"), TenantId("ten_b")


async def seed(uow) -> None:
    async with uow.admin_transaction("test", "seed") as tx:
        for t in (A, B):
            await tx.tenants.add(Tenant(id=t, slug=t.replace("_", "-"), name=t, created_at_ms=0))
        await tx.commit()


def event(n: int, **details: str) -> AuditEvent:
    return AuditEvent(actor="key:k1", action=f"thing.{n}", subject=f"s{n}", details=details)


async def append(uow, tenant: TenantId, n: int, *, commit: bool = True):
    async with uow.transaction(tenant) as tx:
        entry = await tx.audit.append(tenant, event(n, note="ünïcode ✓"), at_ms=n)
        if commit:
            await tx.commit()
    return entry


async def trail(uow, tenant: TenantId):
    async with uow.transaction(tenant) as tx:
        return await tx.audit.entries(tenant), await tx.audit.head(tenant)


async def test_entries_chain_per_tenant_and_read_back_whole(uow) -> None:
    await seed(uow)
    first = await append(uow, A, 1)
    second = await append(uow, A, 2)
    other = await append(uow, B, 7)
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert (other.seq, other.prev_hash) == (1, GENESIS)
    entries, head = await trail(uow, A)
    assert entries == [first, second]
    assert dict(entries[0].details) == {"note": "ünïcode ✓"}
    assert (head.seq, head.hash) == (2, second.hash)
    assert verify(A, entries, head) is None
    async with uow.transaction(A) as tx:
        assert [e.seq for e in await tx.audit.entries(A, after_seq=1, limit=5)] == [2]
        assert await tx.audit.entries(A, after_seq=0, limit=1) == [first]


async def test_an_entry_rolls_back_with_its_transaction(uow) -> None:
    await seed(uow)
    await append(uow, A, 1)
    await append(uow, A, 2, commit=False)
    entries, head = await trail(uow, A)
    assert [e.seq for e in entries] == [1] and head.seq == 1
    again = await append(uow, A, 3)
    assert again.seq == 2 and verify(A, (await trail(uow, A))[0], again_head(again)) is None


def again_head(entry):
    from domain.audit.model import AuditHead

    return AuditHead(entry.seq, entry.hash)


@pytest.fixture(params=["sqlite", "postgres", "postgres-pooler"])
async def sql_uow(request, tmp_path):
    # The in-memory unit of work does not isolate concurrent transactions (last commit wins);
    # concurrency is a property of the databases.
    async for u in open_uow(request.param, request, tmp_path):
        yield u


async def test_concurrent_appends_to_one_trail_take_distinct_sequence_numbers(sql_uow) -> None:
    uow = sql_uow
    await seed(uow)
    await asyncio.gather(*(append(uow, A, n) for n in range(12)))
    entries, head = await trail(uow, A)
    assert [e.seq for e in entries] == list(range(1, 13))
    assert verify(A, entries, head) is None


async def test_a_tenants_transaction_reaches_only_its_own_trail(uow) -> None:
    await seed(uow)
    await append(uow, B, 1)
    async with uow.transaction(A) as tx:
        with pytest.raises(TenantScopeViolation):
            await tx.audit.append(B, event(9), at_ms=9)
        with pytest.raises(TenantScopeViolation):
            await tx.audit.entries(B)
        with pytest.raises(TenantScopeViolation):
            await tx.audit.head(B)
        assert await tx.audit.head(A) is None
