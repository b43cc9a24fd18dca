"""Tenant and API-key lifecycle on every unit of work: status changes, deletion with
everything the tenant owns (and nothing another tenant owns), listing, revoking and touching
keys, each held to its tenant."""

from __future__ import annotations

import pytest

from application.errors import TenantScopeViolation
from domain.audit.model import AuditEvent
from domain.conversation.model import Run, Thread
from domain.ids import ApiKeyId, RunId, TenantId, ThreadId
from domain.tenancy.model import Role, Scope, Tenant, TenantProfile, TenantStatus, mint_api_key

A, B = TenantId("ten_a"), TenantId("ten_b")


async def seed(uow) -> dict[TenantId, str]:
    keys = {}
    async with uow.admin_transaction("test", "seed") as tx:
        for t in (A, B):
            await tx.tenants.add(Tenant(id=t, slug=t.replace("_", "-"), name=t, created_at_ms=0))
            issued = mint_api_key(
                key_id=ApiKeyId(f"key_{t}"), tenant_id=t, role=Role.MEMBER, created_at_ms=5
            )
            await tx.api_keys.add(issued.key)
            keys[t] = issued.key.prefix
        await tx.commit()
    for t in (A, B):
        async with uow.transaction(t) as tx:
            await tx.threads.add(Thread(id=ThreadId("th"), tenant_id=t, created_at_ms=1))
            await tx.runs.add(
                Run(
                    id=RunId("r1"),
                    tenant_id=t,
                    thread_id=ThreadId("th"),
                    agent="a",
                    created_at_ms=1,
                )
            )
            await tx.audit.append(t, AuditEvent(actor="x", action="y", subject="z"), at_ms=1)
            await tx.commit()
    return keys


async def test_a_tenant_can_be_suspended_and_resumed(uow) -> None:
    await seed(uow)
    async with uow.admin_transaction("test", "suspend") as tx:
        assert await tx.tenants.set_status(A, TenantStatus.SUSPENDED)
        assert not await tx.tenants.set_status(TenantId("ten_none"), TenantStatus.SUSPENDED)
        await tx.commit()
    async with uow.admin_transaction("test", "read") as tx:
        assert (await tx.tenants.get(A)).status is TenantStatus.SUSPENDED
        assert (await tx.tenants.get(B)).status is TenantStatus.ACTIVE


async def test_deleting_a_tenant_removes_all_it_owns_and_nothing_else(uow) -> None:
    keys = await seed(uow)
    async with uow.admin_transaction("test", "delete") as tx:
        assert await tx.tenants.delete(A)
        assert not await tx.tenants.delete(A)
        await tx.commit()
    async with uow.admin_transaction("test", "read") as tx:
        assert await tx.tenants.get(A) is None
        assert await tx.api_keys.get_by_prefix(keys[A]) is None
        assert (await tx.api_keys.get_by_prefix(keys[B])) is not None
    async with uow.transaction(A) as tx:
        assert await tx.runs.get(A, RunId("r1")) is None
        assert await tx.audit.head(A) is None
    async with uow.transaction(B) as tx:
        assert await tx.runs.get(B, RunId("r1")) is not None
        assert (await tx.audit.head(B)).seq == 1


async def test_keys_are_listed_revoked_and_touched_per_tenant(uow) -> None:
    keys = await seed(uow)
    async with uow.transaction(A) as tx:
        [key] = await tx.api_keys.list_for(A)
        assert key.prefix == keys[A] and key.last_used_at_ms is None and not key.revoked
        await tx.api_keys.touch(A, key.id, 1234)
        assert await tx.api_keys.revoke(A, key.id)
        assert await tx.api_keys.revoke(A, key.id)  # twice is still revoked
        assert not await tx.api_keys.revoke(A, "key_ten_b")  # B's key is not A's to revoke
        with pytest.raises(TenantScopeViolation):
            await tx.api_keys.revoke(B, "key_ten_b")
        await tx.commit()
    async with uow.transaction(A) as tx:
        [key] = await tx.api_keys.list_for(A)
        assert key.revoked and key.last_used_at_ms == 1234
    async with uow.transaction(B) as tx:
        [other] = await tx.api_keys.list_for(B)
        assert not other.revoked and other.last_used_at_ms is None


async def test_a_keys_scopes_are_stored_and_read_back_exactly(uow) -> None:
    await seed(uow)
    scoped = mint_api_key(
        key_id=ApiKeyId("key_scoped"),
        tenant_id=A,
        role=Role.MEMBER,
        created_at_ms=7,
        scopes=frozenset({Scope.RUNS, Scope.KB_READ}),
    )
    async with uow.transaction(A) as tx:
        await tx.api_keys.add(scoped.key)
        await tx.commit()
    async with uow.key_transaction(scoped.key.prefix) as tx:
        found = await tx.api_keys.get_by_prefix(scoped.key.prefix)
    assert found is not None and found.scopes == {Scope.RUNS, Scope.KB_READ}
    async with uow.transaction(A) as tx:
        unscoped, again = await tx.api_keys.list_for(A)
    assert unscoped.scopes is None  # a key minted without scopes keeps all its role allows
    assert again.scopes == scoped.key.scopes


async def test_a_tenants_profile_is_stored_reset_and_held_to_its_tenant(uow) -> None:
    await seed(uow)
    profile = TenantProfile(
        plan="trial", tools=frozenset({"kb_search", "create_task"}), models=frozenset({"m1"})
    )
    async with uow.admin_transaction("test", "profile") as tx:
        assert await tx.tenants.set_profile(A, profile)
        assert not await tx.tenants.set_profile(TenantId("ten_none"), profile)
        await tx.commit()
    async with uow.transaction(A) as tx:
        found = await tx.tenants.get(A)
        with pytest.raises(TenantScopeViolation):
            await tx.tenants.set_profile(B, profile)
    assert found is not None and found.profile == profile
    async with uow.transaction(B) as tx:
        other = await tx.tenants.get(B)
    assert other is not None and other.profile == TenantProfile()
    async with uow.admin_transaction("test", "reset") as tx:
        assert await tx.tenants.set_profile(A, TenantProfile(tools=frozenset()))
        await tx.commit()
        [a, _] = await tx.tenants.list()
    assert a.profile == TenantProfile(tools=frozenset())  # no tools at all, not "all tools"
