"""The audit events of tool calls, tasks, renders and interrupts: ids, codes and counts only."""

from __future__ import annotations

from domain.audit.events import render_finished, tool_called
from domain.conversation.model import Run
from domain.ids import RunId, TenantId, ThreadId
from domain.render.model import RenderFormat, RenderJob
from domain.tools.model import ToolInvocation, ToolOutcome

T = TenantId("t")


def test_a_tool_name_the_model_invented_at_any_length_still_makes_a_valid_entry() -> None:
    run = Run(
        id=RunId("r1"), tenant_id=T, thread_id=ThreadId("t1"), agent="assistant", created_at_ms=1
    )
    call = ToolInvocation(
        tenant_id=T,
        subject="key:k",
        run_id="r1",
        tool="x" * 5000,
        arguments_digest="d",
        outcome=ToolOutcome.UNKNOWN_TOOL,
        latency_ms=0.4,
        at_ms=1,
        call_id="c1",
        error_code="unknown_tool",
    )
    event = tool_called(run, call)
    assert event.details["tool"] == "x" * 200
    assert (event.details["duration_ms"], event.details["error"]) == ("0", "unknown_tool")


def test_a_failed_render_keeps_its_error_code_and_not_its_message() -> None:
    job = RenderJob(id="r1", tenant_id=T, template="inline:abc", formats=(RenderFormat.PDF,))
    job.fail("{{ secret }} is undefined", 5)
    event = render_finished(job, error_code="template_failed")
    assert dict(event.details) == {
        "status": "failed",
        "formats": "pdf",
        "attempts": "0",
        "error": "template_failed",
    }
