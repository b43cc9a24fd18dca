"""Who is calling: the principal is a REQUEST-scoped dependency resolved from the bearer key,
after which the tenant's rate limit is checked."""

from __future__ import annotations

from dishka import Provider, Scope, provide
from litestar import Request

from application.conversation.ports import RateLimiter
from application.errors import RateLimited, Unauthenticated
from application.tenancy.use_cases import Authenticate
from domain.tenancy.model import Principal
from entrypoints.settings import Settings


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("missing Authorization header: send 'Bearer <api key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


class PrincipalProvider(Provider):
    scope = Scope.REQUEST

    @provide
    async def principal(
        self,
        request: Request,
        authenticate: Authenticate,
        limiter: RateLimiter,
        settings: Settings,
    ) -> Principal:
        principal = await authenticate(bearer_token(request), request.headers.get("x-tenant-id"))
        limit = settings.rate_limit.default_per_minute
        decision = await limiter.hit(f"tenant:{principal.tenant_id}", limit=limit, window_s=60.0)
        if not decision.allowed:
            raise RateLimited(
                f"tenant {principal.tenant_slug} exceeded {limit} requests per minute",
                retry_after_s=decision.retry_after_s,
                limit=decision.limit,
                remaining=decision.remaining,
            )
        return principal
