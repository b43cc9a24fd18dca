"""The in-process launcher keeps runs of different tenants apart."""

from __future__ import annotations

import asyncio

from adapters.memory.launcher import AsyncioRunLauncher
from application.conversation.ports import RunAssignment
from domain.ids import RunId, TenantId, ThreadId


def assignment(tenant: str) -> RunAssignment:
    return RunAssignment(
        tenant_id=TenantId(tenant),
        thread_id=ThreadId("t"),
        run_id=RunId("r1"),
        agent="assistant",
        created_at_ms=0,
        messages=(),
        forwarded_props={},
    )


async def test_cancelling_one_tenants_run_leaves_the_same_id_of_another_running() -> None:
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    outcomes: dict[str, str] = {}

    async def execute(job: RunAssignment) -> None:
        try:
            await gates[job.tenant_id].wait()
            outcomes[job.tenant_id] = "finished"
        except asyncio.CancelledError:
            outcomes[job.tenant_id] = "cancelled"
            raise

    launcher = AsyncioRunLauncher(execute)
    launcher.launch(assignment("a"))
    launcher.launch(assignment("b"))
    await asyncio.sleep(0)
    assert launcher.cancel(TenantId("a"), RunId("r1"))
    assert not launcher.cancel(TenantId("c"), RunId("r1"))
    gates["b"].set()
    await launcher.drain(5)
    assert outcomes == {"a": "cancelled", "b": "finished"}
    assert launcher.active == 0


async def test_drain_cancels_runs_that_outlive_the_grace_period() -> None:
    started = asyncio.Event()

    async def execute(job: RunAssignment) -> None:
        started.set()
        await asyncio.Event().wait()

    launcher = AsyncioRunLauncher(execute)
    launcher.launch(assignment("a"))
    await started.wait()
    await launcher.drain(0.01)
    assert launcher.active == 0
