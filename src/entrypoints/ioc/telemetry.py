"""Builds a process's ``Telemetry`` from the settings."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace.export import SpanExporter

from adapters.observability.access import AccessLog
from adapters.observability.asgi import ASGIApp, ObservedASGI
from adapters.observability.exposition import serve_metrics
from adapters.observability.instrumented import CountingCache
from adapters.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from adapters.observability.metrics import Metrics
from adapters.observability.telemetry import Telemetry
from adapters.observability.tracing import make_tracer_provider
from application.ports import Cache
from entrypoints.ioc.secrets import read_secret
from entrypoints.settings import Settings, SettingsError

VERSION = "0.1.0"

__all__ = [
    "METRICS_CONTENT_TYPE",
    "Telemetry",
    "build_telemetry",
    "counted",
    "observed",
    "serve_metrics_port",
]

log = logging.getLogger("sba.telemetry")


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
        access_log=AccessLog() if settings.http.access_log else None,
    )


def observed(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    """The application wrapped with request ids, server spans and HTTP metrics."""
    return ObservedASGI(
        app, tracer=telemetry.tracer, metrics=telemetry.metrics, access=telemetry.access_log
    )


async def serve_metrics_port(telemetry: Telemetry, settings: Settings) -> asyncio.Server | None:
    """This process's ``/metrics`` on ``SBA_TELEMETRY__METRICS_HOST:…_PORT``, a listener of
    its own (the token, when set, is asked there too); None when no port is set. Each of N
    server processes (``sba serve --workers N``) takes the first free port of ``port`` to
    ``port + N - 1``. A port already taken (by another server process of the same host) is
    logged, not fatal."""
    t = settings.telemetry
    if telemetry.metrics is None or not t.metrics_port:
        return None
    ports = range(t.metrics_port, min(t.metrics_port + settings.http.workers, 65536))
    server, failure = None, None
    for port in ports:
        try:
            server = await serve_metrics(
                telemetry.metrics, t.metrics_host, port, token=telemetry.metrics_token
            )
            break
        except OSError as exc:
            failure = exc
    if server is None:
        log.warning(
            "metrics not served on %s:%d-%d: %s", t.metrics_host, ports[0], ports[-1], failure
        )
        return None
    log.info("metrics on http://%s:%d/metrics", *server.sockets[0].getsockname()[:2])
    return server


def counted(cache: Cache, telemetry: Telemetry, name: str) -> Cache:
    """The cache as one consumer sees it, its hits and misses exported under ``name``."""
    if telemetry.metrics is None:
        return cache
    view = CountingCache(cache)
    telemetry.metrics.watch_cache(name, view.stats)
    return view
