"""Port of the audit trail."""

from __future__ import annotations

from typing import Protocol

from domain.audit.model import AuditEntry, AuditEvent, AuditHead
from domain.ids import TenantId


class AuditTrail(Protocol):
    """A tenant's hash-chained audit entries, bound to the transaction that holds it: an entry
    appended is committed, or rolled back, with the change it records. Appends to one tenant's
    trail are serialized (two transactions never take the same sequence number). Entries are
    never changed or removed through this port."""

    async def append(self, tenant_id: TenantId, event: AuditEvent, *, at_ms: int) -> AuditEntry: ...

    async def head(self, tenant_id: TenantId) -> AuditHead | None: ...

    async def entries(
        self, tenant_id: TenantId, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        """In sequence order, from ``after_seq + 1``."""
        ...
