"""Builds a process's ``Telemetry`` from the settings."""

from __future__ import annotations

import json

from opentelemetry.sdk.trace.export import SpanExporter

from adapters.observability.asgi import ASGIApp, ObservedASGI
from adapters.observability.instrumented import CountingCache
from adapters.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from adapters.observability.metrics import Metrics
from adapters.observability.telemetry import Telemetry
from adapters.observability.tracing import make_tracer_provider
from application.ports import Cache
from entrypoints.ioc.secrets import read_secret
from entrypoints.settings import Settings, SettingsError

VERSION = "0.1.0"

__all__ = ["METRICS_CONTENT_TYPE", "Telemetry", "build_telemetry", "counted", "observed"]


def build_telemetry(settings: Settings, *, span_exporter: SpanExporter | None = None) -> Telemetry:
    """``span_exporter`` replaces the configured exporter (tests collect spans in memory)."""
    t = settings.telemetry
    headers = dict(t.otlp_headers)
    if t.otlp_headers_file:
        try:
            loaded = json.loads(
                read_secret(None, t.otlp_headers_file, "SBA_TELEMETRY__OTLP_HEADERS_FILE") or ""
            )
        except json.JSONDecodeError as exc:
            raise SettingsError(f"SBA_TELEMETRY__OTLP_HEADERS_FILE: not JSON: {exc}") from exc
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise SettingsError(
                "SBA_TELEMETRY__OTLP_HEADERS_FILE: must hold a JSON object of strings"
            )
        headers.update(loaded)
    token = read_secret(t.metrics_token, t.metrics_token_file, "SBA_TELEMETRY__METRICS_TOKEN_FILE")
    provider = make_tracer_provider(
        t.traces,
        service_name=t.service_name,
        version=VERSION,
        sample_ratio=t.sample_ratio,
        otlp_endpoint=t.otlp_endpoint,
        otlp_headers=headers,
        span_exporter=span_exporter,
    )
    return Telemetry(
        provider=provider,
        metrics=Metrics() if t.metrics else None,
        statements=t.trace_statements,
        content_tenants=frozenset(settings.log.content_tenants),
        metrics_token=token or None,
        version=VERSION,
    )


def observed(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    """The application wrapped with request ids, server spans and HTTP metrics."""
    return ObservedASGI(app, tracer=telemetry.tracer, metrics=telemetry.metrics)


def counted(cache: Cache, telemetry: Telemetry, name: str) -> Cache:
    """The cache as one consumer sees it, its hits and misses exported under ``name``."""
    if telemetry.metrics is None:
        return cache
    view = CountingCache(cache)
    telemetry.metrics.watch_cache(name, view.stats)
    return view
