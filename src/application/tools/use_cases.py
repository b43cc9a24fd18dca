"""Invoking tools under the tenant's policy, with a timeout and an audit record."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from application.conversation.ports import ToolSpec
from application.ports import Clock
from application.tools.ports import ToolAudit, ToolContext, ToolPolicy, ToolRegistry, ToolResult
from domain.tools.model import ToolInvocation, ToolOutcome, arguments_digest


@dataclass(frozen=True, slots=True)
class Invoked:
    result: ToolResult
    invocation: ToolInvocation


def error_result(outcome: ToolOutcome, message: str) -> ToolResult:
    return ToolResult(
        content=json.dumps({"error": outcome.value, "message": message}), outcome=outcome
    )


class ListTools:
    def __init__(self, registry: ToolRegistry, policy: ToolPolicy) -> None:
        self._registry = registry
        self._policy = policy

    def __call__(self, tenant_slug: str) -> list[ToolSpec]:
        allowed = self._policy.allowed(tenant_slug)
        specs = self._registry.specs()
        return specs if allowed is None else [s for s in specs if s.name in allowed]


class InvokeTool:
    def __init__(
        self,
        registry: ToolRegistry,
        policy: ToolPolicy,
        audit: ToolAudit,
        clock: Clock,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._audit = audit
        self._clock = clock
        self._timeout_s = timeout_s

    def needs_approval(self, tenant_slug: str, name: str) -> bool:
        return self._policy.needs_approval(tenant_slug, name)

    async def __call__(self, ctx: ToolContext, name: str, arguments: str) -> ToolResult:
        return (await self.invoke(ctx, name, arguments)).result

    async def invoke(
        self, ctx: ToolContext, name: str, arguments: str, *, call_id: str = ""
    ) -> Invoked:
        """The result, and the record of the invocation that the run journal writes to the
        audit trail with the run's end (where the result itself is stored)."""
        started = time.perf_counter()
        allowed = self._policy.allowed(ctx.tenant_slug)
        if allowed is not None and name not in allowed:
            result = error_result(
                ToolOutcome.REFUSED, f"the tool {name!r} is not enabled for this workspace"
            )
        else:
            try:
                result = await asyncio.wait_for(
                    self._registry.run(name, arguments, ctx), self._timeout_s
                )
            except TimeoutError:
                result = error_result(
                    ToolOutcome.TIMED_OUT, f"the tool {name!r} took longer than {self._timeout_s} s"
                )
        invocation = ToolInvocation(
            tenant_id=ctx.tenant_id,
            subject=ctx.subject,
            run_id=ctx.run_id,
            tool=name,
            arguments_digest=arguments_digest(arguments),
            outcome=result.outcome,
            latency_ms=(time.perf_counter() - started) * 1000,
            at_ms=self._clock.now_ms(),
            call_id=call_id,
            error_code=result.error_code,
        )
        await self._audit.record(invocation)
        return Invoked(result, invocation)
