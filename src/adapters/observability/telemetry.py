"""What a process records: its tracer provider (None: no spans) and its metrics (None: no
``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from adapters.observability.access import AccessLog
from adapters.observability.metrics import Metrics
from adapters.observability.tracing import SCOPE


@dataclass(slots=True)
class Telemetry:
    provider: TracerProvider | None
    metrics: Metrics | None
    # Spans for SQL statements and Redis commands too.
    statements: bool = True
    # Tenants (slugs) whose prompts and answers are logged.
    content_tenants: frozenset[str] = frozenset()
    metrics_token: str | None = None
    version: str = ""
    # One line per request (None: none).
    access_log: AccessLog | None = None
    _tracer: Tracer | None = None

    @property
    def tracer(self) -> Tracer | None:
        if self.provider is None:
            return None
        if self._tracer is None:
            self._tracer = self.provider.get_tracer(SCOPE, self.version)
        return self._tracer

    @property
    def statement_tracer(self) -> Tracer | None:
        return self.tracer if self.statements else None

    def shutdown(self) -> None:
        """Flushes the spans still batched and the access log's queue."""
        if self.provider is not None:
            self.provider.shutdown()
        if self.access_log is not None:
            self.access_log.close()
