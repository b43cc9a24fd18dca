"""Reading a tenant's audit trail in tests: every read also checks that the chain holds."""

from __future__ import annotations

from application.ports import UnitOfWork
from domain.audit.model import AuditEntry, verify
from domain.ids import TenantId


async def verified_trail(uow: UnitOfWork, tenant: TenantId) -> list[AuditEntry]:
    """The tenant's entries in order, after asserting the chain and its head verify."""
    async with uow.transaction(tenant) as tx:
        entries = await tx.audit.entries(tenant)
        head = await tx.audit.head(tenant)
    broken = verify(tenant, entries, head)
    assert broken is None, f"the audit trail of {tenant} is broken: {broken}"
    return entries


def actions(entries: list[AuditEntry]) -> list[str]:
    return [e.action for e in entries]


def break_audit_appends(monkeypatch) -> None:
    """Every append to an audit trail (memory or SQL) fails from now on, as a database that
    refuses the entry would: the change it records must not be stored either."""
    from adapters.memory.persistence import MemoryAuditTrail
    from adapters.sqla.audit import SqlaAuditTrail
    from application.errors import ServiceUnavailable

    async def refuse(*args, **kwargs):
        raise ServiceUnavailable("the audit trail refused the entry")

    monkeypatch.setattr(MemoryAuditTrail, "append", refuse)
    monkeypatch.setattr(SqlaAuditTrail, "append", refuse)


async def tenant_trail(container, slug: str) -> list[AuditEntry]:
    """A tenant's whole trail read as ``sba audit verify`` reads it (the verify use case, in
    the tenant's own transactions), once it verifies."""
    from application.audit.use_cases import AuditTrails

    trails = AuditTrails(await container.get(UnitOfWork))
    [tenant] = await trails.tenants(actor="test", slug=slug)
    report = await trails.verify(tenant)
    assert report.broken is None, f"the audit trail of {slug} is broken: {report.broken}"
    entries = [e async for e in trails.entries(tenant)]
    assert report.entries == len(entries)
    return entries
