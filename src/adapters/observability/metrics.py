"""Prometheus metrics, in a registry of their own per process.

Two kinds: instruments the hot path updates as things happen (request counts and durations,
time to first event, tool and model latency, run outcomes, tokens and cost), and figures the
components already count in plain attributes (cache hits, rate-limit decisions, job outcomes,
model fallbacks, active runs), read only when ``/metrics`` is scraped, so they cost the hot
path nothing. Queue depth and dead letters need a round trip to their stores; ``refresh``
reads them before each exposition.

Every label takes values from a bounded set: route templates (never raw paths), tool and
model names from the configuration, tenant ids, outcome and error codes. Each process (the
server, each worker) exposes its own figures; Prometheus scrapes each as its own target and
queries sum over them (ADR 0031)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.conversation.models import ModelStats
from application.jobs.use_cases import JobStats
from application.ports import CacheStats
from application.quota.use_cases import QuotaStats

log = logging.getLogger("sba.metrics")

# The classic text format, which every Prometheus version reads (the HTTP layer adds the
# charset).
CONTENT_TYPE = "text/plain; version=0.0.4"

# The ``*_created`` series double an exposition's size and no query of ours reads them.
disable_created_metrics()

_FAST = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REQUEST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TOOL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_MODEL = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _counters(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, str], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


class GateFigures(Protocol):
    """A start queue's counts: starts let in at once, after waiting, refused; waiting now."""

    immediate: int
    queued: int
    refused: int
    waiting: int


@dataclass(slots=True, eq=False)
class _Watched(Collector):
    """The components' own counters, read at scrape time."""

    caches: dict[str, CacheStats] = field(default_factory=dict)
    limiters: dict[str, QuotaStats] = field(default_factory=dict)
    models: list[ModelStats] = field(default_factory=list)
    jobs: list[JobStats] = field(default_factory=list)
    runs: list[Callable[[], int]] = field(default_factory=list)
    start_gates: list[GateFigures] = field(default_factory=list)
    refusals: list[dict[str, int]] = field(default_factory=list)
    streams: int = 0
    queue_depth: float | None = None
    dead_letters: float | None = None
    scrape_errors: int = 0

    def collect(self) -> Iterable[Metric]:
        cache = CounterMetricFamily(
            "sba_cache_requests",
            "Cache look-ups by cache and result (hit, miss, error: the store was unreachable).",
            labels=["cache", "result"],
        )
        for name, s in sorted(self.caches.items()):
            cache.add_metric([name, "hit"], s.hits)
            cache.add_metric([name, "miss"], s.misses)
            cache.add_metric([name, "error"], s.errors)
        yield cache
        limits = CounterMetricFamily(
            "sba_rate_limit_decisions",
            "Admission decisions by limiter (request: rate limits, runs: concurrent runs) and "
            "decision: admitted, refused, degraded (admitted unchecked, store unreachable), "
            "unavailable (refused with 503, store unreachable).",
            labels=["limiter", "decision"],
        )
        for name, q in sorted(self.limiters.items()):
            limits.add_metric([name, "admitted"], q.admitted)
            limits.add_metric([name, "refused"], q.refused)
            limits.add_metric([name, "degraded"], q.degraded)
            limits.add_metric([name, "unavailable"], q.unavailable)
        yield limits
        calls: dict[tuple[str, str], int] = {}
        fallbacks = 0
        for m in self.models:
            for name, n in m.calls.items():
                calls[(name, "called")] = calls.get((name, "called"), 0) + n
            for name, n in m.failures.items():
                calls[(name, "failed")] = calls.get((name, "failed"), 0) + n
            fallbacks += m.fallbacks
        yield _counters(
            "sba_model_attempts",
            "Attempts on each model of the chain (called) and those that failed before "
            "answering (failed: the next model was tried, or the run failed).",
            ["model", "result"],
            calls,
        )
        yield CounterMetricFamily(
            "sba_model_fallbacks",
            "Requests a model of the chain handed to the next one.",
            value=fallbacks,
        )
        outcomes: dict[tuple[str, str], int] = {}
        for j in self.jobs:
            for key, n in j.outcomes.items():
                outcomes[key] = outcomes.get(key, 0) + n
        yield _counters(
            "sba_tasks",
            "Background job deliveries by kind and outcome (succeeded, retried, dead_lettered).",
            ["kind", "outcome"],
            outcomes,
        )
        yield GaugeMetricFamily(
            "sba_active_runs",
            "Runs executing in this process.",
            value=sum(count() for count in self.runs),
        )
        yield GaugeMetricFamily(
            "sba_active_streams", "Event streams open in this process.", value=self.streams
        )
        starts = CounterMetricFamily(
            "sba_run_starts",
            "Run starts through the start queue, by how they got their place: immediate, queued "
            "(after waiting their turn), refused (503 server_busy after waiting too long).",
            labels=["admission"],
        )
        for outcome in ("immediate", "queued", "refused"):
            starts.add_metric([outcome], sum(getattr(g, outcome) for g in self.start_gates))
        yield starts
        yield GaugeMetricFamily(
            "sba_run_starts_waiting",
            "Run starts waiting for their turn now.",
            value=sum(g.waiting for g in self.start_gates),
        )
        refused: dict[str, int] = {}
        for counts in self.refusals:
            for code, n in counts.items():
                refused[code] = refused.get(code, 0) + n
        unavailable = CounterMetricFamily(
            "sba_http_unavailable",
            "Requests answered 503, by problem code: server_busy (the run start queue), "
            "redis_busy (every Redis connection busy), limiter_unavailable, "
            "service_unavailable (a database or Redis failed or was exhausted).",
            labels=["code"],
        )
        for code, n in sorted(refused.items()):
            unavailable.add_metric([code], n)
        yield unavailable
        depth = GaugeMetricFamily(
            "sba_queue_depth", "Jobs waiting for a worker or being worked on (the broker's view)."
        )
        if self.queue_depth is not None:
            depth.add_metric([], self.queue_depth)
        yield depth
        dead = GaugeMetricFamily("sba_dead_letters", "Jobs that failed on every attempt.")
        if self.dead_letters is not None:
            dead.add_metric([], self.dead_letters)
        yield dead
        yield CounterMetricFamily(
            "sba_metrics_scrape_errors",
            "Stores that could not be read for an exposition (their gauges were left out).",
            value=self.scrape_errors,
        )


class Metrics:
    """Every metric SBA exposes. Components register what they count with ``watch_*``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.http_requests = Counter(
            "sba_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "sba_http_request_duration_seconds",
            "From a request's arrival to its answer's last byte (a stream's whole life).",
            ["route", "method"],
            buckets=_REQUEST,
            registry=r,
        )
        self.sse_first_event = Histogram(
            "sba_sse_first_event_seconds",
            "From a streaming request's arrival to its first event leaving.",
            ["route"],
            buckets=_FAST,
            registry=r,
        )
        self.runs = Counter(
            "sba_runs",
            "Runs ended, by outcome (succeeded, failed, cancelled) and error code.",
            ["outcome", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "sba_model_tokens",
            "Tokens used by ended runs, by tenant id, answering model and direction.",
            ["tenant", "model", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "sba_model_cost",
            "What ended runs' tokens cost by the price table, by tenant id, model and currency.",
            ["tenant", "model", "currency"],
            registry=r,
        )
        self.model_duration = Histogram(
            "sba_model_call_duration_seconds",
            "One model of the chain answering one step, by model and outcome (ok or an error "
            "code).",
            ["model", "outcome"],
            buckets=_MODEL,
            registry=r,
        )
        self.tool_duration = Histogram(
            "sba_tool_duration_seconds",
            "Backend tool executions by tool and outcome.",
            ["tool", "outcome"],
            buckets=_TOOL,
            registry=r,
        )
        self.watched = _Watched()
        r.register(self.watched)
        self._probes: list[tuple[str, Callable[[], Awaitable[int]]]] = []

    def watch_cache(self, name: str, stats: CacheStats) -> None:
        self.watched.caches[name] = stats

    def watch_limiter(self, name: str, stats: QuotaStats) -> None:
        self.watched.limiters[name] = stats

    def watch_models(self, stats: ModelStats) -> None:
        if all(s is not stats for s in self.watched.models):
            self.watched.models.append(stats)

    def watch_jobs(self, stats: JobStats) -> None:
        if all(s is not stats for s in self.watched.jobs):
            self.watched.jobs.append(stats)

    def watch_runs(self, count: Callable[[], int]) -> None:
        self.watched.runs.append(count)

    def watch_start_gate(self, stats: GateFigures) -> None:
        self.watched.start_gates.append(stats)

    def watch_refusals(self, counts: dict[str, int]) -> None:
        """503 answers by problem code, as the HTTP edge counts them."""
        self.watched.refusals.append(counts)

    def probe(self, what: str, read: Callable[[], Awaitable[int]]) -> None:
        """``what`` is ``queue_depth`` or ``dead_letters``: read before each exposition."""
        self._probes.append((what, read))

    def stream_opened(self) -> None:
        self.watched.streams += 1

    def stream_closed(self) -> None:
        self.watched.streams -= 1

    async def refresh(self, timeout_s: float = 2.0) -> None:
        for what, read in self._probes:
            try:
                value: float | None = await asyncio.wait_for(read(), timeout_s)
            except Exception as exc:  # a store that is down leaves its gauge out
                self.watched.scrape_errors += 1
                log.warning("metrics: cannot read %s: %s", what, exc)
                value = None
            setattr(self.watched, what, value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        await self.refresh()
        return self.exposition()
