"""HTTP hardening: security headers on every response (streams and errors included), and the
CORS policy from settings.

The API answers JSON, problem+json and event streams, none of which a browser should render
or frame, so its policy is the strictest (``default-src 'none'``); only the API reference page
under ``/schema`` loads its own script and styles (no CDN). The chat and
first-start pages (``/``, ``/welcome``, their files under ``/ui/``) may load their own scripts,
styles and images and call this origin, and nothing else: no inline script, no other host."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_PATHS = ("/", "/welcome")
# Headers a browser-based AG-UI client sends and reads (CopilotKit, @ag-ui/client).
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "X-Tenant-ID",
    "Idempotency-Key",
    "Last-Event-ID",
    "X-Request-ID",
    "traceparent",
    "tracestate",
]
CORS_RESPONSE_HEADERS = [
    "Location",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-Request-ID",
    "Idempotency-Replayed",
]


def security_headers(hsts_max_age_s: int) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if hsts_max_age_s > 0:
        value = f"max-age={hsts_max_age_s}; includeSubDomains".encode()
        headers.append((b"strict-transport-security", value))
    return headers


def security_headers_hook(hsts_max_age_s: int) -> Callable[[Message, Scope], Awaitable[None]]:
    """A Litestar ``before_send`` hook: it sees every response the app sends, including the
    404 of an unknown path and errors raised before any route's middleware, and adds the
    security headers unless the handler set its own value of one."""
    common = security_headers(hsts_max_age_s)
    api = (b"content-security-policy", API_CSP.encode())
    docs = (b"content-security-policy", DOCS_CSP.encode())
    page = (b"content-security-policy", PAGE_CSP.encode())

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        path = scope["path"]
        if path.startswith("/schema"):
            csp = docs
        elif path in PAGE_PATHS or path.startswith("/ui/"):
            csp = page
        else:
            csp = api
        existing = list(message.get("headers", ()))
        present = {bytes(name).lower() for name, _ in existing}
        extra = [h for h in (*common, csp) if h[0] not in present]
        message["headers"] = [*existing, *extra]

    return before_send


def cors_config(origins: Iterable[str], *, max_age_s: int = 600) -> CORSConfig | None:
    """CORS for the listed origins only (none: no CORS headers, browsers on other origins are
    refused). Credentials are not allowed: clients send a bearer token, not cookies."""
    allowed = [o.rstrip("/") for o in origins if o.strip()]
    if not allowed:
        return None
    return CORSConfig(
        allow_origins=allowed,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_RESPONSE_HEADERS,
        allow_credentials=False,
        max_age=max_age_s,
    )
