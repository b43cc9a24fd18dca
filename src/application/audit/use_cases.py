"""Verifying and exporting tenants' audit trails (the operator's ``sba audit``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from application.errors import NotFound
from application.ports import UnitOfWork
from domain.audit.model import AuditEntry, ChainBreak, ChainVerifier
from domain.tenancy.model import Tenant

BATCH = 1000


@dataclass(frozen=True, slots=True)
class TrailReport:
    tenant: Tenant
    entries: int
    broken: ChainBreak | None


class AuditTrails:
    """Reads each trail in its tenant's own transactions (row-level security holds), a batch
    at a time. The head is read first and the trail checked up to it, so entries appended
    while it runs are neither missed nor blamed."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def tenants(self, *, actor: str, slug: str | None = None) -> list[Tenant]:
        async with self._uow.admin_transaction(actor, "audit.read") as tx:
            if slug is None:
                return await tx.tenants.list()
            tenant = await tx.tenants.get_by_slug(slug)
        if tenant is None:
            raise NotFound(f"no tenant with slug {slug!r}")
        return [tenant]

    async def entries(self, tenant: Tenant) -> AsyncIterator[AuditEntry]:
        async with self._uow.transaction(tenant.id) as tx:
            head = await tx.audit.head(tenant.id)
        last = head.seq if head is not None else 0
        after = 0
        while after < last:
            async with self._uow.transaction(tenant.id) as tx:
                batch = await tx.audit.entries(tenant.id, after_seq=after, limit=BATCH)
            batch = [e for e in batch if e.seq <= last]
            if not batch:
                return
            for entry in batch:
                yield entry
            after = batch[-1].seq

    async def verify(self, tenant: Tenant) -> TrailReport:
        async with self._uow.transaction(tenant.id) as tx:
            head = await tx.audit.head(tenant.id)
        verifier = ChainVerifier(tenant.id)
        last = head.seq if head is not None else 0
        after = 0
        while after < last and verifier.broken is None:
            async with self._uow.transaction(tenant.id) as tx:
                batch = [
                    e
                    for e in await tx.audit.entries(tenant.id, after_seq=after, limit=BATCH)
                    if e.seq <= last
                ]
            if not batch:
                break
            verifier.feed(batch)
            after = batch[-1].seq
        return TrailReport(tenant, verifier.checked, verifier.finish(head))
