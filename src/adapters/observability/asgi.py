"""The HTTP edge's observability, as one ASGI wrapper around the whole application (outside
routing, so unknown paths and refused requests count too):

- a request id: the caller's ``X-Request-ID`` when it is a plain token, else a new one; sent
  back in the answer's ``X-Request-ID`` and current for the request's logs;
- the caller's W3C trace context (``traceparent``/``tracestate``) made current, and a server
  span for the request as its child when tracing is on;
- request counts and durations by route template, the time to a stream's first event, and
  the number of streams open;
- with an access log, one line per request."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from adapters.observability.access import AccessLog
from adapters.observability.metrics import Metrics
from application.context import current_request_id, current_tenant

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_TOKEN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_UNMATCHED = "unmatched"


def new_request_id() -> str:
    return os.urandom(8).hex()


def _identify(scope: Scope) -> tuple[bytes, otel_context.Context | None]:
    """The request's id (the caller's when it is a plain token) and the caller's trace
    context, if it sent one."""
    request_id = b""
    traced = False
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            request_id = value
        elif name == b"traceparent":
            traced = True
    if not request_id or _TOKEN.fullmatch(request_id) is None:
        request_id = new_request_id().encode()
    if not traced:
        return request_id, None
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }
    return request_id, propagate.extract(carrier)


class _Exchange:
    """One request's answer as it passes out: its status, whether it is an event stream, and
    the time to a stream's first event. An object rather than a closure over the request's
    variables: a held stream keeps it for its whole life, and this is the smaller."""

    __slots__ = (
        "_observer",
        "_request_id",
        "_scope",
        "_send",
        "_start",
        "first_seen",
        "status",
        "streaming",
    )

    def __init__(
        self, observer: ObservedASGI, scope: Scope, send: Send, request_id: bytes, start: float
    ) -> None:
        self._observer = observer
        self._scope = scope
        self._send = send
        self._request_id = request_id
        self._start = start
        self.status = 0
        self.streaming = False
        self.first_seen = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers") or ()
            for name, value in headers:
                if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                    self.streaming = True
                    metrics = self._observer._metrics
                    if metrics is not None:
                        metrics.stream_opened()
                    break
            message["headers"] = [*headers, (REQUEST_ID_HEADER, self._request_id)]
        elif (self.streaming and not self.first_seen and kind == "http.response.body") and message[
            "body"
        ]:
            self.first_seen = True
            self._observer._first_event_seen(self._scope, self._start)
        await self._send(message)


class ObservedASGI:
    __slots__ = (
        "_access",
        "_app",
        "_durations",
        "_first_event",
        "_metrics",
        "_requests",
        "_tracer",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: Tracer | None,
        metrics: Metrics | None,
        access: AccessLog | None = None,
    ) -> None:
        self._app = app
        self._tracer = tracer
        self._metrics = metrics
        self._access = access
        # Label children by their values: prometheus_client's own lookup takes a lock.
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._first_event: dict[str, Any] = {}

    def _first_event_seen(self, scope: Scope, start: float) -> None:
        metrics = self._metrics
        if metrics is not None:
            route = scope.get("path_template") or _UNMATCHED
            child = self._first_event.get(route)
            if child is None:
                child = self._first_event[route] = metrics.sse_first_event.labels(route)
            child.observe(time.perf_counter() - start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, parent = _identify(scope)
        rid_token = current_request_id.set(request_id.decode("latin-1"))
        tenant_token = current_tenant.set("")
        method: str = scope["method"]
        tracer = self._tracer
        span = None
        ctx_token = None
        if tracer is not None:
            span = tracer.start_span(
                method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )
            ctx_token = otel_context.attach(trace.set_span_in_context(span, parent))
        elif parent is not None:
            ctx_token = otel_context.attach(parent)
        metrics = self._metrics
        exchange = _Exchange(self, scope, send, request_id, start)
        try:
            await self._app(scope, receive, exchange.send)
        except BaseException:
            if exchange.status == 0:
                exchange.status = 500
            raise
        finally:
            route = scope.get("path_template") or _UNMATCHED
            status = exchange.status
            if metrics is not None:
                if exchange.streaming:
                    metrics.stream_closed()
                key = (route, method, status)
                counter = self._requests.get(key)
                if counter is None:
                    counter = self._requests[key] = metrics.http_requests.labels(
                        route, method, str(status)
                    )
                counter.inc()
                dkey = (route, method)
                duration = self._durations.get(dkey)
                if duration is None:
                    duration = self._durations[dkey] = metrics.http_duration.labels(route, method)
                duration.observe(time.perf_counter() - start)
            if self._access is not None:
                self._access.record(
                    method=method,
                    path=scope["path"],
                    status=status,
                    duration_s=time.perf_counter() - start,
                    request_id=request_id.decode("latin-1"),
                    tenant=current_tenant.get(),
                    trace_id=format(span.get_span_context().trace_id, "032x") if span else "",
                )
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("sba.request_id", request_id.decode("latin-1"))
                if tenant := current_tenant.get():
                    span.set_attribute("sba.tenant", tenant)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                span.end()
            if ctx_token is not None:
                otel_context.detach(ctx_token)
            current_tenant.reset(tenant_token)
            current_request_id.reset(rid_token)
