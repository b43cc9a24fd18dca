"""A run that stops to ask a person: an interrupt, answered in the client's next run."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.ids import RunId, TenantId, ThreadId


class InterruptStatus(enum.StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt:
    """A tool call that waits for a person's approval before it runs."""

    id: str
    tenant_id: TenantId
    thread_id: ThreadId
    run_id: RunId
    tool_call_id: str
    tool_name: str
    arguments: str
    reason: str
    message: str
    expires_at_ms: int
    status: InterruptStatus = InterruptStatus.PENDING

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms
