"""The audit events of state changes, built in one place so every adapter records them alike.
Details are ids, counts and codes: never message contents or secrets."""

from __future__ import annotations

from domain.audit.model import AuditEvent
from domain.conversation.interrupts import Interrupt, InterruptStatus
from domain.conversation.model import Run
from domain.conversation.threads import ThreadRemoval
from domain.render.model import RenderJob
from domain.tools.model import Task, ToolInvocation

MAX_NAME = 200


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


def tool_called(run: Run, call: ToolInvocation) -> AuditEvent:
    """A tool the run's agent invoked, allowed or not: its name, outcome and duration, never
    its arguments or result (not even their digest: short arguments are easily guessed)."""
    details = {
        # The name is the model's: one it invented is cut to fit rather than fail the run's end.
        "tool": call.tool[:MAX_NAME],
        "run": call.run_id,
        "outcome": call.outcome.value,
        "duration_ms": str(round(call.latency_ms)),
    }
    if call.error_code:
        details["error"] = call.error_code
    return AuditEvent(
        actor=f"agent:{run.agent}", action="tool.called", subject=call.call_id, details=details
    )


def task_created(task: Task, *, actor: str, run_id: str = "") -> AuditEvent:
    details = {"created_by": task.created_by}
    if run_id:
        details["run"] = run_id
    return AuditEvent(actor=actor, action="task.created", subject=task.id, details=details)


def task_updated(before: Task, after: Task, *, actor: str) -> AuditEvent:
    """Which fields a person changed, the status and assignee they left (identifiers, not
    text: a title or notes changed is named, never quoted)."""
    details = {
        "changed": ",".join(before.differences(after)),
        "status": after.status.value,
    }
    if after.assignee is not None:
        details["assignee"] = after.assignee
    return AuditEvent(actor=actor, action="task.updated", subject=after.id, details=details)


def task_deleted(task: Task, *, actor: str) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action="task.deleted",
        subject=task.id,
        details={"status": task.status.value, "created_by": task.created_by[:MAX_NAME]},
    )


def thread_renamed(thread_id: str, *, actor: str, cleared: bool) -> AuditEvent:
    """The title itself is the person's text and stays off the trail."""
    return AuditEvent(
        actor=actor,
        action="thread.renamed",
        subject=thread_id,
        details={"title": "derived" if cleared else "set"},
    )


def thread_deleted(removal: ThreadRemoval, *, actor: str) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action="thread.deleted",
        subject=removal.thread_id,
        details={
            "runs": str(removal.runs),
            "messages": str(removal.messages),
            "interrupts": str(removal.interrupts),
        },
    )


def render_requested(job: RenderJob, *, actor: str) -> AuditEvent:
    """The template reference is an id (``kb:…``, ``content:…``) or, inline, a digest."""
    return AuditEvent(
        actor=actor,
        action="render.requested",
        subject=job.id,
        details={"template": job.template, "formats": ",".join(f.value for f in job.formats)},
    )


RENDER_WORKER = "system:render"


def render_finished(job: RenderJob, *, error_code: str | None = None) -> AuditEvent:
    """A render that ended, done or failed: its error message stays on the job (it may quote
    the template), the trail keeps the code."""
    details = {
        "status": job.state.value,
        "formats": ",".join(f.value for f in job.formats),
        "attempts": str(job.attempts),
    }
    if error_code:
        details["error"] = error_code
    return AuditEvent(
        actor=RENDER_WORKER, action="render.finished", subject=job.id, details=details
    )


def interrupt_opened(interrupt: Interrupt, *, actor: str) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action="interrupt.opened",
        subject=interrupt.id,
        details={
            "run": interrupt.run_id,
            "thread": interrupt.thread_id,
            "tool": interrupt.tool_name,
            "tool_call": interrupt.tool_call_id,
            "reason": interrupt.reason,
        },
    )


def interrupt_resolved(interrupt: Interrupt, status: InterruptStatus, *, actor: str) -> AuditEvent:
    """``outcome``: ``resolved`` (the person approved) or ``cancelled`` (declined)."""
    return AuditEvent(
        actor=actor,
        action="interrupt.resolved",
        subject=interrupt.id,
        details={
            "outcome": status.value,
            "run": interrupt.run_id,
            "tool": interrupt.tool_name,
            "tool_call": interrupt.tool_call_id,
        },
    )
