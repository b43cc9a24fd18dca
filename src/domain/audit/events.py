"""The audit events of state changes, built in one place so every adapter records them alike.
Details are ids, counts and codes: never message contents or secrets."""

from __future__ import annotations

from domain.audit.model import AuditEvent
from domain.conversation.model import Run


def run_started(run: Run, messages: int) -> AuditEvent:
    return AuditEvent(
        actor=f"agent:{run.agent}",
        action="run.started",
        subject=run.id,
        details={"thread": run.thread_id, "messages": str(messages)},
    )


def run_finished(run: Run) -> AuditEvent:
    details = {
        "status": run.status.value,
        "input_tokens": str(run.usage.input_tokens),
        "output_tokens": str(run.usage.output_tokens),
    }
    if run.model:
        details["model"] = run.model
    if run.error_code:
        details["error"] = run.error_code
    return AuditEvent(
        actor=f"agent:{run.agent}", action="run.finished", subject=run.id, details=details
    )
