"""The OpenAPI document, completed so that a client can be generated from it (ADR 0042).

Litestar documents what it sees in the handlers' signatures. Our routes decode their bodies
through ``json_body`` (ADR 0039) and answer errors through one problem table (ADR 0006), so
the document it builds lacks what those add; this module adds it once, to the document the
server serves:

- each route's request body, from the msgspec Struct its handler decodes with (declared in the
  handler's ``opt["body"]``), as shared component schemas;
- the credentials: a bearer API key or token on ``/v1``, the admin token on ``/admin/v1``, the
  metrics token on ``/metrics``;
- the problem answers (``application/problem+json``) each kind of route can give;
- the run start and resume answering ``text/event-stream``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

from entrypoints.http.problems import PROBLEM_JSON, Problem

REF = "#/components/schemas/{name}"
_STREAMS = {("post", "/v1/agents/{agent}/runs"), ("get", "/v1/runs/{run_id}/events")}
# Reached without a credential of ours: signed by their sender, or by the link itself.
_OPEN = ("/healthz", "/readyz", "/v1/webhooks/", "/schema")
_SIGNED_LINK = "/artifacts/"

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`sba_…`) or a JWT from the configured identity provider; "
        "`X-Tenant-ID` chooses among the tenants a token names.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's token (SBA_AUTH__ADMIN_TOKEN).",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The metrics token (SBA_TELEMETRY__METRICS_TOKEN).",
    },
}

_PROBLEMS = {
    "400": "The request is malformed: invalid JSON, nested too deep, an invalid cursor",
    "401": "No credential, or one that is wrong, expired or revoked",
    "403": "The credential may not do this (role, scope, tenant)",
    "404": "Nothing with this id in the tenant",
    "409": "The change conflicts with the stored state",
    "422": "The request is well formed but not valid",
    "429": "A rate limit, run cap or budget: retry after `Retry-After` seconds",
    "500": "A bug: it has been logged with the request id",
    "503": "A service the request needs is unavailable: retry shortly",
}
_EVENT_STREAM = {
    "schema": {
        "type": "string",
        "description": "AG-UI events as Server-Sent Events: each frame is `id: <sequence>` "
        "and `data: <event JSON>`; an idle stream gets `: ping` comments.",
    }
}


def _problem(status: str) -> dict[str, Any]:
    return {
        "description": _PROBLEMS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(name="Problem")}}},
    }


def _bodies(app: Litestar) -> dict[tuple[str, str], type[msgspec.Struct]]:
    """(method, path) → the Struct a route's handler decodes its body into."""
    found = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            body = handler.opt.get("body")
            if body is not None:
                for method in handler.http_methods:
                    found[(method.lower(), route.path_format)] = body
    return found


def _security(path: str) -> list[dict[str, list[str]]] | None:
    if path.startswith(_OPEN) or _SIGNED_LINK in path:
        return None
    if path.startswith("/admin/"):
        return [{"adminToken": []}]
    if path == "/metrics":
        return [{"metricsToken": []}]
    return [{"apiKey": []}]


def _statuses(method: str, path: str, operation: dict[str, Any]) -> Iterable[str]:
    yield from ("500", "503")
    if _security(path) is not None:
        yield from ("401", "403", "429")
    if "{" in path:
        yield "404"
    if "requestBody" in operation or operation.get("parameters"):
        yield from ("400", "422")
    if method in ("post", "put", "patch", "delete"):
        yield "409"


class CompletedDocument(JsonRenderPlugin):
    """Serves ``/schema/openapi.json``, completed when it is first asked for (building the
    document costs a fifth of a second: not at every start)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        complete(request.app, openapi_schema)
        return super().render(request, openapi_schema)


def complete(app: Litestar, document: dict[str, Any]) -> dict[str, Any]:
    """Completes ``document`` (the one ``app`` serves, which Litestar keeps) in place, once."""
    if document.get("components", {}).get("securitySchemes") is SECURITY_SCHEMES:
        return document
    bodies = _bodies(app)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    structs = sorted(set(bodies.values()), key=lambda s: s.__name__)
    _, defs = msgspec.json.schema_components([Problem, *structs], ref_template=REF)
    for name, schema in defs.items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            body = bodies.get((method, path))
            if body is not None and "requestBody" not in operation:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(name=body.__name__)}}
                    },
                }
            security = _security(path)
            if security is not None:
                operation["security"] = security
            responses = operation.setdefault("responses", {})
            for status in _statuses(method, path, operation):
                # Litestar's own 400 names its validation shape; ours are all problems.
                responses[status] = _problem(status)
            if (method, path) in _STREAMS:
                ok = responses.setdefault("200", {"description": "The run's events"})
                ok["content"] = {"text/event-stream": _EVENT_STREAM}
            elif path == "/metrics":
                responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
            elif _SIGNED_LINK in path:
                responses["200"]["content"] = {
                    media: {"schema": {"type": "string", "format": "binary"}}
                    for media in ("text/markdown", "text/html", "application/pdf")
                }
    return document
