"""Many tenants at once over a pool of two connections: each transaction sees its own tenant's
rows only, however the pool interleaves them. Each reads without a tenant filter, so only the
transaction's context (row-level security) stands between it and the others' rows."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import text

from adapters.scope import TenantScope
from adapters.sqla.knowledge import PostgresKnowledgeStore
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.scope import Database
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from domain.conversation.model import Thread
from domain.ids import TenantId, ThreadId
from domain.knowledge.model import KbDocument
from domain.knowledge.text import ContentType
from domain.tenancy.model import Tenant
from tests.pg import drop_database, fresh_database

TENANTS = [TenantId(f"ten_{i:02d}") for i in range(24)]
ROUNDS = 6


async def test_concurrent_transactions_of_many_tenants_never_see_each_others_rows(
    request,
) -> None:
    url, name = await fresh_database(request.getfixturevalue("pg_template"))
    engine = create_engine_for(url, pool_size=2, max_overflow=0)
    db = Database(engine, app_role=DEFAULT_APP_ROLE)
    uow = SqlaUnitOfWork(db)
    kb = PostgresKnowledgeStore(db)
    leaks: list[str] = []
    try:
        async with uow.admin_transaction("test", "seed") as tx:
            for t in TENANTS:
                await tx.tenants.add(
                    Tenant(id=t, slug=t.replace("_", "-"), name=t, created_at_ms=0)
                )
            await tx.commit()

        async def worker(tenant: TenantId, round_: int) -> None:
            for _ in range(random.randrange(3)):  # vary the interleaving: yield, never wait
                await asyncio.sleep(0)
            async with uow.transaction(tenant) as tx:
                await tx.threads.add(
                    Thread(id=ThreadId(f"t{round_}"), tenant_id=tenant, created_at_ms=round_)
                )
                await tx.commit()
            async with db.connect(TenantScope(tenant)) as conn:
                owners = (
                    (await conn.execute(text("SELECT DISTINCT tenant_id FROM threads")))
                    .scalars()
                    .all()
                )
            if set(owners) != {tenant}:
                leaks.append(f"{tenant} saw threads of {sorted(set(owners) - {tenant})}")
            doc = KbDocument(
                id=f"d{round_}",
                tenant_id=tenant,
                title=f"Plan of {tenant}",
                content=f"codeword{tenant.replace('_', '')} round {round_}",
                content_type=ContentType.MARKDOWN,
                source="kb://x",
                metadata={},
                created_at_ms=0,
                updated_at_ms=0,
            )
            await kb.put(doc, doc.chunks(max_chars=200, overlap=20))
            for other in random.sample(TENANTS, 3):
                hits = await kb.search(tenant, f"codeword{other.replace('_', '')}", limit=10)
                if other != tenant and hits:
                    leaks.append(f"{tenant} found {other}'s documents")

        await asyncio.gather(
            *(worker(t, r) for r in range(ROUNDS) for t in random.sample(TENANTS, len(TENANTS)))
        )
        assert leaks == []
        async with engine.connect() as conn:  # as the superuser: every write landed
            total = (await conn.execute(text("SELECT count(*) FROM threads"))).scalar_one()
        assert total == len(TENANTS) * ROUNDS
    finally:
        await engine.dispose()
        await drop_database(name)
