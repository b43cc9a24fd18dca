"""What the current operation concerns, for logs and traces: the request it serves and the
tenant it acts for. Context variables, set by whoever learns them (the HTTP edge the request
id, authentication the tenant, a job runner its job's tenant) and read by the log formatter;
a run launched from a request carries them, as a task copies its creator's context."""

from __future__ import annotations

from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("sba_request_id", default="")
current_tenant: ContextVar[str] = ContextVar("sba_tenant", default="")
