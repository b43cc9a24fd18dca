"""Who is calling: the principal is a REQUEST-scoped dependency resolved from the bearer
credential. The client address's rate limit is checked before authentication, the tenant's
and principal's after it (for starting a run, by the use case, with the run caps); the
binding limit is sent back in the ``RateLimit`` headers. Failed authentications are held to
their own, lower limit per address and per key prefix."""

from __future__ import annotations

from typing import Any

from dishka import Provider, provide
from dishka import Scope as DiScope
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from application.context import current_tenant
from application.errors import Unauthenticated
from application.quota.auth_failures import AuthFailureLimit
from application.quota.use_cases import AdmitRequest
from application.tenancy.use_cases import Authenticate
from domain.quota.policy import RouteClass
from domain.tenancy.model import Principal, split_api_key
from entrypoints.http.problems import rate_headers
from entrypoints.settings import Settings

RATE_STATE = "sba_rate"


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("missing Authorization header: send 'Bearer <api key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


def client_address(request: ASGIConnection[Any, Any, Any, Any], header: str) -> str:
    if header:
        # The last entry is the one your own proxy appended; earlier ones are the client's word.
        value = request.headers.get(header)
        if value:
            return value.rsplit(",", 1)[-1].strip()
    client = request.client
    return client.host if client is not None else "unknown"


def route_class(request: Request[Any, Any, Any]) -> RouteClass:
    declared = request.route_handler.opt.get("rate_class")
    if declared is not None:
        return RouteClass(declared)
    return RouteClass.READ if request.method in ("GET", "HEAD", "OPTIONS") else RouteClass.WRITE


def rate_headers_middleware(app: ASGIApp) -> ASGIApp:
    """Adds the ``RateLimit`` headers of the request's decision to its answer, streams
    included (headers leave before the first event)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = scope.get("state", {}).get(RATE_STATE)
                if decision is not None:
                    present = {name.lower() for name, _ in message.get("headers", ())}
                    if b"ratelimit" not in present:
                        extra = [
                            (k.encode(), v.encode()) for k, v in rate_headers(decision).items()
                        ]
                        message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


class PrincipalProvider(Provider):
    scope = DiScope.REQUEST

    @provide
    async def principal(
        self,
        request: Request,  # dishka registers the bare class
        authenticate: Authenticate,
        admit: AdmitRequest,
        failures: AuthFailureLimit,
        settings: Settings,
    ) -> Principal:
        address = client_address(request, settings.rate_limit.client_address_header)
        await admit.address(address)
        token = bearer_token(request)
        split = split_api_key(token)
        prefix = split[0] if split is not None else None
        failures.check(address, prefix)
        try:
            principal = await authenticate(token, request.headers.get("x-tenant-id"))
        except Unauthenticated:
            await failures.failed(address, prefix)
            raise
        # The request's logs and spans name the tenant from here on.
        current_tenant.set(principal.tenant_id)
        route = route_class(request)
        # Starting a run is held to its limits by StartRun, together with its run caps.
        if route is not RouteClass.RUNS:
            decision = await admit.principal(principal, route)
            if decision is not None and decision.results:
                request.state[RATE_STATE] = decision
        return principal
