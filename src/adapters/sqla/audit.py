"""The audit trail on SQL. An append takes the tenant's head row for update first (created at
sequence 0 when missing), so appends to one trail queue behind each other; the raw-SQL helpers
serve both this adapter and the SQLite run journal, which writes through ``sqlite3``."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.scope import Scope, check_tenant
from adapters.sqla.tables import audit_entries, audit_heads
from domain.audit.model import GENESIS, AuditEntry, AuditEvent, AuditHead, chain
from domain.ids import TenantId

_ENSURE_HEAD = (
    "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ({t}, 0, {g}) "
    "ON CONFLICT (tenant_id) DO NOTHING"
)
_READ_HEAD = "SELECT seq, hash FROM audit_heads WHERE tenant_id = {t}"
_INSERT_ENTRY = (
    "INSERT INTO audit_entries (tenant_id, seq, at_ms, actor, action, subject, details, "
    "prev_hash, hash) VALUES ({p})"
)
_MOVE_HEAD = "UPDATE audit_heads SET seq = {s}, hash = {h} WHERE tenant_id = {t}"


def entry_details(event: AuditEvent) -> str:
    """The stored form of an entry's details: JSON with sorted keys, as hashed."""
    return json.dumps(dict(sorted(event.details.items())), ensure_ascii=False)


def entry_row(entry: AuditEntry, event: AuditEvent) -> tuple[Any, ...]:
    """An entry's columns, in ``audit_entries`` order."""
    return (
        entry.tenant_id,
        entry.seq,
        entry.at_ms,
        event.actor,
        event.action,
        event.subject,
        entry_details(event),
        entry.prev_hash,
        entry.hash,
    )


def _head(seq: int, hash_: str) -> AuditHead | None:
    return None if seq == 0 else AuditHead(int(seq), hash_)


def append_sqlite(cur: sqlite3.Cursor, tenant_id: TenantId, event: AuditEvent, at_ms: int) -> None:
    """Appends inside the caller's ``sqlite3`` transaction (the run journal's group commit)."""
    cur.execute(_ENSURE_HEAD.format(t="?", g="?"), (tenant_id, GENESIS))
    seq, hash_ = cur.execute(_READ_HEAD.format(t="?"), (tenant_id,)).fetchone()
    entry = chain(tenant_id, _head(seq, hash_), at_ms, event)
    cur.execute(_INSERT_ENTRY.format(p=", ".join("?" * 9)), entry_row(entry, event))
    cur.execute(_MOVE_HEAD.format(s="?", h="?", t="?"), (entry.seq, entry.hash, tenant_id))


class SqlaAuditTrail:
    def __init__(self, conn: AsyncConnection, scope: Scope, *, is_postgres: bool) -> None:
        self._conn = conn
        self._scope = scope
        self._lock = " FOR UPDATE" if is_postgres else ""

    async def append(self, tenant_id: TenantId, event: AuditEvent, *, at_ms: int) -> AuditEntry:
        check_tenant(self._scope, tenant_id)
        conn = self._conn
        await conn.execute(
            text(_ENSURE_HEAD.format(t=":t", g=":g")), {"t": tenant_id, "g": GENESIS}
        )
        seq, hash_ = (
            await conn.execute(text(_READ_HEAD.format(t=":t") + self._lock), {"t": tenant_id})
        ).one()
        entry = chain(tenant_id, _head(seq, hash_), at_ms, event)
        names = ("t", "s", "a", "ac", "act", "sub", "d", "p", "h")
        await conn.execute(
            text(_INSERT_ENTRY.format(p=", ".join(f":{n}" for n in names))),
            dict(zip(names, entry_row(entry, event), strict=True)),
        )
        await conn.execute(
            text(_MOVE_HEAD.format(s=":s", h=":h", t=":t")),
            {"s": entry.seq, "h": entry.hash, "t": tenant_id},
        )
        return entry

    async def head(self, tenant_id: TenantId) -> AuditHead | None:
        check_tenant(self._scope, tenant_id)
        r = (
            await self._conn.execute(
                select(audit_heads.c.seq, audit_heads.c.hash).where(
                    audit_heads.c.tenant_id == tenant_id
                )
            )
        ).first()
        return None if r is None else _head(r.seq, r.hash)

    async def entries(
        self, tenant_id: TenantId, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        check_tenant(self._scope, tenant_id)
        c = audit_entries.c
        rows = await self._conn.execute(
            select(audit_entries)
            .where(c.tenant_id == tenant_id, c.seq > after_seq)
            .order_by(c.seq)
            .limit(limit)
        )
        return [
            AuditEntry(
                tenant_id=TenantId(r.tenant_id),
                seq=int(r.seq),
                at_ms=int(r.at_ms),
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                details=json.loads(r.details),
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r in rows
        ]
