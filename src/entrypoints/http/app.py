"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import logging
import os
from typing import Any

from dishka import AsyncContainer, FromDishka, Provider
from dishka.integrations.litestar import LitestarProvider, inject, setup_dishka
from litestar import Litestar, Request, Router, get
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Response
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from application.conversation.ports import RunLauncher
from application.quota.auth_failures import AuthFailureLimit
from entrypoints.http.admin import AdminController, admin_guard
from entrypoints.http.auth import PrincipalProvider, client_address, rate_headers_middleware
from entrypoints.http.backpressure import StartGate, StartGateProvider
from entrypoints.http.hardening import cors_config, security_headers_hook
from entrypoints.http.health import healthz, readyz
from entrypoints.http.idempotency import idempotency_middleware
from entrypoints.http.inputs import nul_guard_middleware
from entrypoints.http.knowledge import KnowledgeController
from entrypoints.http.onboarding import TemplateController
from entrypoints.http.openapi import CompletedDocument
from entrypoints.http.problems import EXCEPTION_HANDLERS, REFUSALS_STATE
from entrypoints.http.renders import RenderController, download_artifact
from entrypoints.http.runs import RunController
from entrypoints.http.sse import detachable
from entrypoints.http.tasks import TaskController
from entrypoints.http.threads import ThreadController
from entrypoints.http.tools import list_tools
from entrypoints.http.ui import UI_ROUTES
from entrypoints.http.usage import usage
from entrypoints.http.webhooks import basehub_webhook
from entrypoints.ioc.container import make_container
from entrypoints.ioc.jobs import start_jobs
from entrypoints.ioc.recovery import start_recovery, stop_recovery
from entrypoints.ioc.secrets import read_secret
from entrypoints.ioc.telemetry import (
    METRICS_CONTENT_TYPE,
    Telemetry,
    build_telemetry,
    observed,
    serve_metrics_port,
)
from entrypoints.settings import Settings

log = logging.getLogger("sba.http")
DOCS_ASSETS = "/schema-assets"
VERSION = "0.1.0"


class _App(Litestar):
    """The application with its HTTP edge around the framework: request ids, traces and
    metrics (``observed``), and the detaching of started streams (``detachable``). The edge is
    outside the framework's own entry, so that a stream that has left the framework's call
    chain keeps none of it, not even the framework's ``send`` wrapper for ``before_send``
    hooks (ours act on the answer's start only)."""

    _edge: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._edge is not None:
            await self._edge(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *extra_providers: Provider, telemetry: Telemetry | None = None
) -> Litestar:
    """``telemetry`` unset: built from the settings."""
    telemetry = telemetry or build_telemetry(settings)
    gate = StartGate(settings.http.start_concurrency, settings.http.start_queue_timeout_s)
    if telemetry.metrics is not None:
        telemetry.metrics.watch_start_gate(gate.stats)
    container: AsyncContainer = make_container(
        settings,
        LitestarProvider(),
        PrincipalProvider(),
        StartGateProvider(gate),
        *extra_providers,
        telemetry=telemetry,
    )
    metrics = telemetry.metrics
    token = telemetry.metrics_token
    admin_token = read_secret(
        settings.auth.admin_token, settings.auth.admin_token_file, "SBA_AUTH__ADMIN_TOKEN_FILE"
    )
    admin = Router(
        path="/",
        route_handlers=[AdminController],
        guards=[admin_guard(admin_token)],
        include_in_schema=admin_token is not None,
    )

    @get(
        "/metrics",
        summary="Prometheus metrics of this process",
        description="Prometheus text exposition, with SBA_TELEMETRY__METRICS_TOKEN as a bearer "
        "token (without one set, this path is 404: its series name tenants). Each process "
        "serves its own figures: scrape every instance.",
        tags=["operations"],
        include_in_schema=metrics is not None and token is not None,
    )
    @inject
    async def metrics_endpoint(
        request: Request[Any, Any, Any], failures: FromDishka[AuthFailureLimit]
    ) -> Response[bytes]:
        if metrics is None:
            raise NotFoundException("metrics are off (SBA_TELEMETRY__METRICS=false)")
        if token is None:
            raise NotFoundException(
                "metrics are served here only with SBA_TELEMETRY__METRICS_TOKEN set, or on "
                "their own port (SBA_TELEMETRY__METRICS_PORT)"
            )
        address = client_address(request, settings.rate_limit.client_address_header)
        failures.check(address, None)
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            if sent:
                await failures.failed(address, None)
            raise NotAuthorizedException("send the metrics token: 'Bearer <token>'")
        return Response(await metrics.scrape(), media_type=METRICS_CONTENT_TYPE)

    # With SBA_TELEMETRY__METRICS_PORT, /metrics on a listener of its own (ADR 0040).
    exposition: list[asyncio.Server] = []

    sweeper: list[asyncio.Task[None]] = []

    async def on_startup() -> None:
        # Build what the first request would, then freeze everything alive so far out of the
        # cyclic GC's scans: they only ever grow with live requests and runs after this.
        await container.get(RunLauncher)
        await start_jobs(container)
        listener = await serve_metrics_port(telemetry, settings)
        if listener is not None:
            exposition.append(listener)
        sweeper.append(await start_recovery(container, settings))
        if settings.http.workers > 1:
            log.info("worker %d of %d serving", os.getpid(), settings.http.workers)
        rt = settings.runtime
        gc.collect()
        gc.freeze()
        gc.set_threshold(rt.gc_gen0_threshold, rt.gc_gen1_threshold, rt.gc_gen2_threshold)

    async def on_shutdown() -> None:
        for listener in exposition:
            listener.close()
        await stop_recovery(sweeper.pop() if sweeper else None)
        launcher = await container.get(RunLauncher)
        await launcher.drain(settings.runs.shutdown_grace_s)
        await container.close()
        telemetry.shutdown()

    app = _App(
        route_handlers=[
            RunController,
            ThreadController,
            TaskController,
            TemplateController,
            KnowledgeController,
            RenderController,
            download_artifact,
            basehub_webhook,
            list_tools,
            usage,
            healthz,
            readyz,
            metrics_endpoint,
            admin,
            create_static_files_router(
                path=DOCS_ASSETS, directories=[swagger_ui_path], name="schema-assets"
            ),
            *UI_ROUTES,
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[rate_headers_middleware, nul_guard_middleware, idempotency_middleware],
        before_send=[security_headers_hook(settings.http.hsts_max_age_s)],
        cors_config=cors_config(settings.http.cors_origins),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="SBA — Smart Business Assistant",
            version=VERSION,
            path="/schema",
            # Swagger UI from its pinned package, served by this server: no CDN.
            render_plugins=[
                SwaggerRenderPlugin(
                    js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                    favicon=f"<link rel='icon' href='{DOCS_ASSETS}/favicon-32x32.png'>",
                    path="/swagger",
                ),
                CompletedDocument(),
            ],
        ),
        logging_config=None,
        debug=False,
    )
    refusals: dict[str, int] = {}
    app.state[REFUSALS_STATE] = refusals
    if metrics is not None:
        metrics.watch_refusals(refusals)
    setup_dishka(container, app)
    # Outermost, around routing: unknown paths and refused requests are counted and traced too,
    # and a stream's metrics see its end, after it has left the framework's call chain.
    framework = functools.partial(Litestar.__call__, app)
    app._edge = observed(detachable(framework), telemetry)  # type: ignore[arg-type]
    return app


__all__ = ["create_app"]
