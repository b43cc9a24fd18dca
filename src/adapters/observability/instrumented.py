"""Ports wrapped with spans and metrics. Each wrapper keeps its port's contract; the
composition root puts them in place only when tracing or metrics are on, so a deployment
with both off runs the bare adapters."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from adapters.observability.metrics import Metrics
from application.conversation.ports import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    RunAssignment,
    RunJournal,
    TextChunk,
    ToolCallStarted,
    ToolSpec,
    UsageChunk,
)
from application.errors import ApplicationError
from application.ports import Cache, CacheStats
from application.tools.ports import ToolContext, ToolRegistry, ToolResult
from domain.billing.prices import PriceTable
from domain.conversation.model import Message, Run, RunStatus
from domain.tools.model import ToolInvocation

content_log = logging.getLogger("sba.llm.content")

Execute = Callable[[RunAssignment], Coroutine[Any, Any, None]]


class ObservedRunExecutor:
    """The run as a span (child of the request that started it), parent of its model calls,
    tool calls and statements."""

    def __init__(self, execute: Execute, tracer: Tracer) -> None:
        self._execute = execute
        self._tracer = tracer

    async def __call__(self, job: RunAssignment) -> None:
        with self._tracer.start_as_current_span(
            "run",
            attributes={
                "sba.tenant": job.tenant_id,
                "sba.run_id": job.run_id,
                "sba.thread_id": job.thread_id,
                "sba.agent": job.agent,
            },
        ):
            await self._execute(job)


class ObservedRunJournal:
    """Counts each run's ending (outcome, tokens, cost) once its record is committed, and
    notes the outcome on the run's span."""

    def __init__(
        self,
        inner: RunJournal,
        *,
        metrics: Metrics | None,
        prices: PriceTable,
        tracer: Tracer | None,
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._prices = prices
        self._tracer = tracer

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        if self._tracer is None:
            await self._inner.record_start(run, messages)
            return
        with self._tracer.start_as_current_span("journal record_start"):
            await self._inner.record_start(run, messages)

    async def record_end(
        self, run: Run, replies: Sequence[Message], tool_calls: Sequence[ToolInvocation] = ()
    ) -> None:
        if self._tracer is None:
            await self._inner.record_end(run, replies, tool_calls)
        else:
            with self._tracer.start_as_current_span("journal record_end"):
                await self._inner.record_end(run, replies, tool_calls)
        outcome = str(run.status)
        usage = run.usage
        model = run.model or "none"
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("sba.run.outcome", outcome)
            span.set_attribute("sba.run.model", model)
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            if run.status is not RunStatus.SUCCEEDED:
                span.set_status(StatusCode.ERROR, run.error_code or outcome)
        m = self._metrics
        if m is None:
            return
        tenant = run.tenant_id
        m.runs.labels(outcome, run.error_code or "").inc()
        if usage.input_tokens:
            m.tokens.labels(tenant, model, "input").inc(usage.input_tokens)
        if usage.output_tokens:
            m.tokens.labels(tenant, model, "output").inc(usage.output_tokens)
        cost = self._prices.cost(model, usage.input_tokens, usage.output_tokens)
        if cost:
            m.cost.labels(tenant, model, self._prices.currency).inc(float(cost))


class ObservedChatModel:
    """One model of the chain: a client span per call (GenAI attributes: provider, model,
    tokens; whether it stands in for an earlier model of the chain) and its latency."""

    def __init__(
        self,
        inner: ChatModel,
        *,
        name: str,
        provider: str,
        model: str,
        fallback: bool,
        tracer: Tracer | None,
        metrics: Metrics | None,
    ) -> None:
        self._inner = inner
        self._name = name
        self._tracer = tracer
        self._metrics = metrics
        self._attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider,
            "gen_ai.request.model": model or name,
            "sba.llm.name": name,
            "sba.llm.fallback": fallback,
        }

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        span = (
            self._tracer.start_span(
                f"chat {self._name}",
                kind=SpanKind.CLIENT,
                attributes={**self._attributes, "sba.tenant": request.tenant_id},
            )
            if self._tracer is not None
            else None
        )
        start = time.perf_counter()
        outcome = "ok"
        input_tokens = output_tokens = 0
        try:
            async for chunk in self._inner.stream(request):
                if isinstance(chunk, UsageChunk):
                    input_tokens += chunk.usage.input_tokens
                    output_tokens += chunk.usage.output_tokens
                yield chunk
        except ApplicationError as exc:
            outcome = exc.code
            raise
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            if span is not None:
                span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
                if outcome != "ok":
                    span.set_status(StatusCode.ERROR, outcome)
                span.end()
            if self._metrics is not None:
                self._metrics.model_duration.labels(self._name, outcome).observe(
                    time.perf_counter() - start
                )


class ContentLoggingChatModel:
    """Logs the prompts and answers of the listed tenants (by slug), for debugging one
    tenant's conversations; every other tenant's content is never logged."""

    def __init__(self, inner: ChatModel, tenants: frozenset[str]) -> None:
        self._inner = inner
        self._tenants = tenants

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if request.tenant_slug not in self._tenants:
            async for chunk in self._inner.stream(request):
                yield chunk
            return
        answer: list[str] = []
        calls: list[str] = []
        async for chunk in self._inner.stream(request):
            if isinstance(chunk, TextChunk):
                answer.append(chunk.delta)
            elif isinstance(chunk, ToolCallStarted):
                calls.append(chunk.name)
            yield chunk
        content_log.info(
            "model exchange",
            extra={
                "prompt": [{"role": str(m.role), "content": m.content} for m in request.messages],
                "answer": "".join(answer),
                "tool_calls": calls,
            },
        )


class ObservedToolRegistry:
    """Each backend tool execution as a span (current while it runs, so what the tool does
    nests under it) and in the latency histogram, by tool and outcome."""

    def __init__(
        self, inner: ToolRegistry, *, tracer: Tracer | None, metrics: Metrics | None
    ) -> None:
        self._inner = inner
        self._tracer = tracer
        self._metrics = metrics
        self._names = frozenset(s.name for s in inner.specs())

    def specs(self) -> list[ToolSpec]:
        return self._inner.specs()

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        label = name if name in self._names else "unknown"
        start = time.perf_counter()
        if self._tracer is None:
            result = await self._inner.run(name, arguments, ctx)
        else:
            with self._tracer.start_as_current_span(
                f"tool {label}",
                attributes={
                    "sba.tool.name": label,
                    "sba.tenant": ctx.tenant_id,
                    "sba.run_id": ctx.run_id,
                },
            ) as span:
                result = await self._inner.run(name, arguments, ctx)
                span.set_attribute("sba.tool.outcome", str(result.outcome))
                if not result.ok:
                    span.set_status(StatusCode.ERROR, str(result.outcome))
        if self._metrics is not None:
            self._metrics.tool_duration.labels(label, str(result.outcome)).observe(
                time.perf_counter() - start
            )
        return result


class CountingCache:
    """One consumer's view of the shared cache, with hits and misses of its own (the
    ``cache`` label of ``sba_cache_requests``)."""

    def __init__(self, inner: Cache) -> None:
        self._inner = inner
        self.stats = CacheStats()

    async def get(self, scope: str, key: str) -> bytes | None:
        try:
            value = await self._inner.get(scope, key)
        except Exception:
            self.stats.errors += 1
            raise
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    async def set(
        self, scope: str, key: str, value: bytes, *, ttl_s: float, tags: Sequence[str] = ()
    ) -> None:
        await self._inner.set(scope, key, value, ttl_s=ttl_s, tags=tags)

    async def invalidate(self, scope: str, tags: Sequence[str]) -> int:
        dropped = await self._inner.invalidate(scope, tags)
        self.stats.invalidated += dropped
        return dropped
