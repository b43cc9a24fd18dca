"""The audit trail: per tenant, an append-only chain of entries, each carrying the hash of the
one before it. Changing, removing or reordering any entry breaks the chain at that entry;
removing entries from the end is caught by the head (the last sequence number and hash),
which is stored apart from the entries and moved in the same transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from domain.errors import InvariantViolated
from domain.ids import TenantId

GENESIS = "0" * 64
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """What happened, before it is chained: who (``key:<id>``, ``user:<subject>``,
    ``agent:<run id>``, ``admin:<name>``), what (``run.started``, ``kb.document.saved`` …), to
    what, and a few details (ids and counts, never message contents)."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.actor or not self.action:
            raise InvariantViolated("an audit event names its actor and action")
        for key, value in self.details.items():
            if not isinstance(value, str) or len(value) > MAX_DETAIL_CHARS:
                raise InvariantViolated(f"audit detail {key!r} must be a short string")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    tenant_id: TenantId
    seq: int
    at_ms: int
    actor: str
    action: str
    subject: str
    details: Mapping[str, str]
    prev_hash: str
    hash: str

    @property
    def event(self) -> AuditEvent:
        return AuditEvent(
            actor=self.actor, action=self.action, subject=self.subject, details=self.details
        )


@dataclass(frozen=True, slots=True)
class AuditHead:
    seq: int
    hash: str


def entry_hash(
    tenant_id: str,
    seq: int,
    at_ms: int,
    event: AuditEvent,
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON array of every field but the hash itself."""
    canonical = json.dumps(
        [
            tenant_id,
            seq,
            at_ms,
            event.actor,
            event.action,
            event.subject,
            sorted(event.details.items()),
            prev_hash,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain(tenant_id: TenantId, head: AuditHead | None, at_ms: int, event: AuditEvent) -> AuditEntry:
    """The entry that follows ``head`` (None: the tenant's first)."""
    seq = 1 if head is None else head.seq + 1
    prev = GENESIS if head is None else head.hash
    return AuditEntry(
        tenant_id=tenant_id,
        seq=seq,
        at_ms=at_ms,
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details=dict(event.details),
        prev_hash=prev,
        hash=entry_hash(tenant_id, seq, at_ms, event, prev),
    )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.reason}"


class ChainVerifier:
    """Checks entries fed in sequence order, in batches, then the head."""

    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self.checked = 0
        self._last = AuditHead(0, GENESIS)
        self.broken: ChainBreak | None = None

    def feed(self, entries: Iterable[AuditEntry]) -> ChainBreak | None:
        for e in entries:
            if self.broken is not None:
                return self.broken
            expected_seq = self._last.seq + 1
            if e.tenant_id != self.tenant_id:
                self.broken = ChainBreak(e.seq, "belongs to another tenant")
            elif e.seq != expected_seq:
                self.broken = ChainBreak(expected_seq, f"missing (the next entry found is {e.seq})")
            elif e.prev_hash != self._last.hash:
                self.broken = ChainBreak(e.seq, "does not follow the entry before it")
            elif e.hash != entry_hash(e.tenant_id, e.seq, e.at_ms, e.event, e.prev_hash):
                self.broken = ChainBreak(e.seq, "was changed after it was written")
            else:
                self._last = AuditHead(e.seq, e.hash)
                self.checked += 1
        return self.broken

    def finish(self, head: AuditHead | None) -> ChainBreak | None:
        if self.broken is not None:
            return self.broken
        recorded = head or AuditHead(0, GENESIS)
        if recorded.seq > self._last.seq:
            self.broken = ChainBreak(
                self._last.seq + 1, f"missing (the trail should end at {recorded.seq})"
            )
        elif recorded != self._last:
            self.broken = ChainBreak(
                self._last.seq, "the recorded head does not match the last entry"
            )
        return self.broken


def verify(
    tenant_id: TenantId, entries: Iterable[AuditEntry], head: AuditHead | None
) -> ChainBreak | None:
    verifier = ChainVerifier(tenant_id)
    verifier.feed(entries)
    return verifier.finish(head)
