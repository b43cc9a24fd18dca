"""The operator's provisioning API: tenants, their plan, allowed tools and models, status, and
API keys. It answers only a bearer token equal to ``SBA_AUTH__ADMIN_TOKEN`` (compared in
constant time) and is off (404) while none is set. Deleting a tenant stays a CLI command: it
writes the tenant's export to the operator's disk before anything is removed."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from application.errors import InvalidInput
from application.pagination import MAX_LIMIT
from application.quota.auth_failures import AuthFailureLimit
from application.tenancy.use_cases import CreateApiKey, CreateTenant, ManageTenants
from domain.errors import InvariantViolated
from domain.tenancy.model import (
    ApiKey,
    Role,
    Scope,
    Tenant,
    TenantProfile,
    TenantStatus,
    parse_scopes,
)
from entrypoints.http.auth import client_address
from entrypoints.http.inputs import json_body
from entrypoints.settings import Settings

ADMIN_ACTOR = "api"
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
DAY_MS = 86_400_000


class ProfileOut(msgspec.Struct, kw_only=True):
    plan: str | None
    tools: list[str] | None
    models: list[str] | None

    @classmethod
    def of(cls, profile: TenantProfile) -> ProfileOut:
        return cls(
            plan=profile.plan,
            tools=sorted(profile.tools) if profile.tools is not None else None,
            models=sorted(profile.models) if profile.models is not None else None,
        )


class TenantOut(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    slug: str
    name: str
    status: str
    kb_language: str
    created_at_ms: int
    profile: ProfileOut

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            slug=t.slug,
            name=t.name,
            status=t.status.value,
            kb_language=t.kb_language,
            created_at_ms=t.created_at_ms,
            profile=ProfileOut.of(t.profile),
        )


class KeyOut(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    id: str
    prefix: str
    role: str
    scopes: list[str] | None
    revoked: bool
    created_at_ms: int
    expires_at_ms: int | None = None
    last_used_at_ms: int | None = None
    # Only in the answer that creates the key: shown once, never stored.
    key: str | None = None

    @classmethod
    def of(cls, k: ApiKey, plaintext: str | None = None) -> KeyOut:
        return cls(
            id=k.id,
            prefix=k.prefix,
            role=k.role.value,
            scopes=[s.value for s in Scope if s in k.scopes] if k.scopes is not None else None,
            revoked=k.revoked,
            created_at_ms=k.created_at_ms,
            expires_at_ms=k.expires_at_ms,
            last_used_at_ms=k.last_used_at_ms,
            key=plaintext,
        )


class TenantsOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    tenants: list[TenantOut]
    # Send it back as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class TenantDetailOut(msgspec.Struct, kw_only=True):
    tenant: TenantOut
    keys: list[KeyOut]


class TenantIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    slug: str
    name: str | None = None
    kb_language: str = "simple"
    plan: str | None = None
    tools: list[str] | None = None
    models: list[str] | None = None


class TenantPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Each field sent replaces the tenant's; ``null`` puts it back on the deployment's
    default; a field left out is kept."""

    status: TenantStatus | msgspec.UnsetType = msgspec.UNSET
    plan: str | msgspec.UnsetType | None = msgspec.UNSET
    tools: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    models: list[str] | msgspec.UnsetType | None = msgspec.UNSET


class KeyIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    role: Role = Role.MEMBER
    scopes: list[str] | None = None
    expires_in_days: float | None = None


_tenant_in = msgspec.json.Decoder(TenantIn)
_tenant_patch = msgspec.json.Decoder(TenantPatch)
_key_in = msgspec.json.Decoder(KeyIn)


def _names(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def admin_guard(token: str | None) -> Guard:
    """Refuses every request unless it carries the admin token; 404 while none is set, so an
    instance without one does not even show that the API exists. A wrong token is a failed
    authentication, held to the same limit per client address as a wrong API key."""
    expected = f"Bearer {token}".encode() if token else None

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if expected is None:
            raise NotFoundException("the admin API is off (set SBA_AUTH__ADMIN_TOKEN)")
        container = connection.state.dishka_container
        failures = await container.get(AuthFailureLimit)
        settings = await container.get(Settings)
        address = client_address(connection, settings.rate_limit.client_address_header)
        failures.check(address, None)
        sent = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, expected):
            if sent:
                await failures.failed(address, None)
            raise NotAuthorizedException("send the admin token: 'Bearer <token>'")

    return guard


class AdminController(Controller):
    path = "/admin/v1"
    tags = ["admin"]

    @get(
        "/tenants",
        summary="The tenants with their profiles, by slug, a page at a time",
        description="At most `limit` tenants (default 100, at most 500); when more follow, "
        "`nextCursor` is set: send it back as `cursor` for the next page.",
    )
    @inject
    async def list_tenants(
        self,
        manage: FromDishka[ManageTenants],
        limit: Annotated[int | None, QueryParameter(ge=1, le=MAX_LIMIT)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=256)] = None,
    ) -> TenantsOut:
        page = await manage.page(actor=ADMIN_ACTOR, limit=limit, cursor=cursor)
        return TenantsOut(
            tenants=[TenantOut.of(t) for t in page.items], next_cursor=page.next_cursor
        )

    @post(
        "/tenants",
        summary="Create a tenant, optionally on a plan and with tool/model lists",
        opt={"body": TenantIn},
    )
    @inject
    async def create_tenant(
        self,
        request: Request[Any, Any, Any],
        create: FromDishka[CreateTenant],
        manage: FromDishka[ManageTenants],
    ) -> Response[TenantOut]:
        body = await json_body(request, _tenant_in)
        profile = TenantProfile(
            plan=body.plan, tools=_names(body.tools), models=_names(body.models)
        )
        manage.check(profile)  # before anything is created
        tenant = await create(
            body.slug,
            body.name,
            actor=ADMIN_ACTOR,
            kb_language=body.kb_language,
            profile=profile,
        )
        return Response(TenantOut.of(tenant), status_code=201)

    @get("/tenants/{slug:str}", summary="A tenant with its profile and API keys (no secrets)")
    @inject
    async def show_tenant(
        self, slug: FromPath[str], manage: FromDishka[ManageTenants]
    ) -> TenantDetailOut:
        tenant, keys = await manage.get(slug, actor=ADMIN_ACTOR)
        return TenantDetailOut(tenant=TenantOut.of(tenant), keys=[KeyOut.of(k) for k in keys])

    @patch(
        "/tenants/{slug:str}",
        summary="Suspend or resume a tenant; set its plan, tools, models",
        opt={"body": TenantPatch},
    )
    @inject
    async def update_tenant(
        self,
        request: Request[Any, Any, Any],
        slug: FromPath[str],
        manage: FromDishka[ManageTenants],
    ) -> Response[TenantOut]:
        body = await json_body(request, _tenant_patch)
        tenant, _ = await manage.get(slug, actor=ADMIN_ACTOR)
        current = tenant.profile
        profile = TenantProfile(
            plan=current.plan if body.plan is msgspec.UNSET else body.plan,
            tools=current.tools if body.tools is msgspec.UNSET else _names(body.tools),
            models=current.models if body.models is msgspec.UNSET else _names(body.models),
        )
        manage.check(profile)
        if profile != current:
            tenant = await manage.set_profile(slug, profile, actor=ADMIN_ACTOR)
        if body.status is not msgspec.UNSET and body.status is not tenant.status:
            tenant = await manage.set_status(slug, body.status, actor=ADMIN_ACTOR)
        return Response(TenantOut.of(tenant))

    @post(
        "/tenants/{slug:str}/keys",
        summary="Create an API key; the key is in this answer only",
        opt={"body": KeyIn},
    )
    @inject
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        slug: FromPath[str],
        create_key: FromDishka[CreateApiKey],
    ) -> Response[KeyOut]:
        body = await json_body(request, _key_in)
        try:
            scopes = parse_scopes(body.scopes) if body.scopes is not None else None
        except InvariantViolated as exc:
            raise InvalidInput(
                f"the request body is not valid: {exc}", code="validation_failed"
            ) from None
        days = body.expires_in_days
        issued = await create_key(
            slug,
            body.role,
            actor=ADMIN_ACTOR,
            expires_in_ms=round(days * DAY_MS) if days is not None else None,
            scopes=scopes,
        )
        out = KeyOut.of(issued.key, issued.plaintext)
        return Response(out, status_code=201, headers={"Cache-Control": "no-store"})

    @delete("/tenants/{slug:str}/keys/{key_id:str}", summary="Revoke an API key", status_code=204)
    @inject
    async def revoke_key(
        self, slug: FromPath[str], key_id: FromPath[str], manage: FromDishka[ManageTenants]
    ) -> None:
        await manage.revoke_key(slug, key_id, actor=ADMIN_ACTOR)
