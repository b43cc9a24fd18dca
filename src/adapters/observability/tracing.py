"""OpenTelemetry traces: the tracer provider SBA's spans go to, and spans for every SQL
statement. The provider is SBA's own, never the process-global one, so that two applications
in one process (tests, benchmarks) keep their traces apart; W3C context propagation is
global and works whichever provider records.

Exporters: ``otlp`` (OTLP over HTTP, protobuf), ``console`` (one JSON object per span on
stdout), ``none`` (no provider at all: no span is recorded and none of the tracing wrappers
is installed, though a caller's ``traceparent`` still flows into the jobs it causes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

SCOPE = "sba"
_MAX_STATEMENT = 2000


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def make_tracer_provider(
    exporter: str,
    *,
    service_name: str,
    version: str,
    sample_ratio: float = 1.0,
    otlp_endpoint: str = "",
    otlp_headers: Mapping[str, str] | None = None,
    span_exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """None when nothing is to be recorded. ``span_exporter`` (tests) receives each span as
    it ends, synchronously; the others are batched off the event loop's thread."""
    if span_exporter is None and exporter == "none":
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": version}),
        # A trace started upstream keeps its caller's decision; a new one is sampled here.
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(formatter=_one_line)))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(
                    endpoint=otlp_endpoint, headers=dict(otlp_headers or {}), timeout=10
                )
            )
        )
    else:
        raise ValueError(f"unknown trace exporter {exporter!r}")
    return provider


def trace_engine(engine: AsyncEngine, tracer: Tracer) -> None:
    """A client span around each SQL statement, child of whatever span is current (SQLAlchemy
    runs the driver in a greenlet that carries the caller's context)."""
    sync = engine.sync_engine
    system = "postgresql" if sync.dialect.name == "postgresql" else sync.dialect.name

    @event.listens_for(sync, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": system,
                "db.operation": operation,
                "db.statement": statement[:_MAX_STATEMENT],
            },
        )
        conn.info.setdefault("sba_spans", []).append(span)

    @event.listens_for(sync, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        spans = conn.info.get("sba_spans")
        if spans:
            spans.pop().end()

    @event.listens_for(sync, "handle_error")
    def _error(ctx: Any) -> None:
        conn = ctx.connection
        spans = conn.info.get("sba_spans") if conn is not None else None
        if spans:
            span = spans.pop()
            span.set_status(StatusCode.ERROR, type(ctx.original_exception).__name__)
            span.end()
