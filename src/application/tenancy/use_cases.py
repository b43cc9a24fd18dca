"""Tenancy use cases: authenticate a request, provision tenants and keys."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from application.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from application.pagination import Page, check_limit, decode_cursor, page_of
from application.ports import AdminTransaction, Clock, UnitOfWork
from application.tenancy.claims import ClaimMapping, memberships, scopes_from
from application.tenancy.ports import TokenVerifier
from application.tenancy.profiles import ProfileRules, TenantProfiles
from domain.audit.model import AuditEvent
from domain.errors import InvariantViolated
from domain.ids import ApiKeyId, TenantId, new_id
from domain.tenancy.model import (
    ApiKey,
    IssuedKey,
    Principal,
    Role,
    Scope,
    Tenant,
    TenantProfile,
    TenantStatus,
    check_scopes_for_role,
    digest_secret,
    mint_api_key,
    scopes_text,
    split_api_key,
    validate_slug,
)

DEMO_TENANT_SLUG = "demo"
_NEVER = 2**62
# A key's last use is written at most this often (it is read on every cache miss).
LAST_USED_RESOLUTION_MS = 60_000


class Authenticate:
    """Turns a bearer credential (an API key, or an identity provider's JWT when a verifier is
    configured) and an optional tenant selector into a principal.

    A verified credential is remembered for ``cache_ttl_ms`` (by a digest of the whole
    credential, never the credential itself; never past a token's expiry) so that a busy client
    does not cost database reads per request; a revoked key or suspended tenant is therefore
    refused within that time, not at once. Requests carrying the same credential while it is
    being verified share that one verification (and its answer), so a burst arriving as the
    cache entry expires costs one look-up, not one each."""

    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        *,
        cache_ttl_ms: int = 5_000,
        cache_size: int = 10_000,
        tokens: TokenVerifier | None = None,
        claims: ClaimMapping | None = None,
        profiles: TenantProfiles | None = None,
    ) -> None:
        self._profiles = profiles
        self._uow = uow
        self._clock = clock
        self._ttl_ms = cache_ttl_ms
        self._size = cache_size
        self._cache: dict[str, tuple[Principal, int]] = {}
        self._verifying: dict[str, asyncio.Task[tuple[Principal, int]]] = {}
        self._tokens = tokens
        self._claims = claims or ClaimMapping()

    async def __call__(self, bearer: str, tenant_selector: str | None = None) -> Principal:
        # Remembered per credential and tenant asked for: a token naming several tenants
        # resolves each one it is used with.
        digest = digest_secret(bearer)
        if tenant_selector is not None:
            digest = f"{digest}:{tenant_selector}"
        now = self._clock.now_ms()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
            if self._profiles is None or not self._profiles.refuses(
                principal.tenant_id, principal.subject
            ):
                return principal
            # Suspended, deleted or revoked through this process since: checked again now.
            del self._cache[digest]
        verifying = self._verifying.get(digest)
        if verifying is None:
            verifying = asyncio.ensure_future(self._verify_once(digest, bearer, tenant_selector))
            self._verifying[digest] = verifying
            verifying.add_done_callback(lambda done: self._verified(digest, done))
        # Shielded: a request that gives up does not cancel the others' verification.
        principal, _ = await asyncio.shield(verifying)
        return principal

    async def _verify_once(
        self, digest: str, bearer: str, tenant_selector: str | None
    ) -> tuple[Principal, int]:
        principal, expires_at_ms = await self._verify(bearer, tenant_selector)
        if len(self._cache) >= self._size:
            self._cache.clear()
        now = self._clock.now_ms()
        self._cache[digest] = (principal, min(now + self._ttl_ms, expires_at_ms))
        return principal, expires_at_ms

    def _verified(self, digest: str, done: asyncio.Task[tuple[Principal, int]]) -> None:
        if self._verifying.get(digest) is done:
            del self._verifying[digest]
        if not done.cancelled():
            done.exception()  # read here too: every waiter may have gone

    async def _verify(self, bearer: str, selector: str | None) -> tuple[Principal, int]:
        parts = split_api_key(bearer)
        if parts is None:
            if self._tokens is not None and bearer.count(".") == 2:
                return await self._verify_token(bearer, selector)
            raise Unauthenticated("the bearer credential is not a valid API key")
        prefix, secret = parts
        async with self._uow.key_transaction(prefix) as tx:
            key = await tx.api_keys.get_by_prefix(prefix)
            tenant = await tx.tenants.get(key.tenant_id) if key is not None else None
        if key is None or not key.matches(secret) or tenant is None:
            raise Unauthenticated("the API key is unknown or revoked")
        now = self._clock.now_ms()
        refusal = key.refusal(now)
        if refusal is not None:
            raise Unauthenticated(refusal)
        if selector is not None and selector not in (tenant.slug, tenant.id):
            raise Forbidden(
                "this API key does not belong to the tenant named in X-Tenant-ID",
                code="not_a_member",
            )
        if self._profiles is not None:
            self._profiles.learn(tenant)
        if tenant.status is not TenantStatus.ACTIVE:
            raise Forbidden(f"tenant {tenant.slug} is suspended")
        if key.last_used_at_ms is None or now - key.last_used_at_ms >= LAST_USED_RESOLUTION_MS:
            async with self._uow.transaction(tenant.id) as tx:
                await tx.api_keys.touch(tenant.id, key.id, now)
                await tx.commit()
        principal = Principal(
            tenant_id=tenant.id,
            tenant_slug=tenant.slug,
            subject=f"apikey:{key.id}",
            role=key.role,
            scopes=key.scopes,
        )
        return principal, key.expires_at_ms if key.expires_at_ms is not None else _NEVER

    async def _verify_token(self, bearer: str, selector: str | None) -> tuple[Principal, int]:
        assert self._tokens is not None
        claims = await self._tokens.verify(bearer)
        member_of = memberships(claims, self._claims)
        if selector is None:
            if len(member_of) > 1:
                raise InvalidInput(
                    "this token belongs to several tenants: name one in X-Tenant-ID",
                    code="tenant_required",
                )
            [only] = member_of
            tenant = await self._read_tenant(only)
            if tenant is None:
                raise Unauthenticated("the token's tenant is unknown")
        else:
            tenant = await self._member_tenant(member_of, selector)
            if tenant is None:
                raise Forbidden(f"you are not a member of tenant {selector!r}", code="not_a_member")
        if self._profiles is not None:
            self._profiles.learn(tenant)
        if tenant.status is not TenantStatus.ACTIVE:
            raise Forbidden(f"tenant {tenant.slug} is suspended")
        role = member_of[tenant.id]
        principal = Principal(
            tenant_id=tenant.id,
            tenant_slug=tenant.slug,
            subject=f"user:{claims.get('sub')}",
            role=role,
            scopes=scopes_from(claims, self._claims),
        )
        exp = claims.get("exp")
        return principal, int(exp * 1000) if isinstance(exp, int | float) else _NEVER

    async def _member_tenant(self, member_of: Mapping[str, Role], selector: str) -> Tenant | None:
        """The tenant ``selector`` (an id or a slug) names, when the person is a member of it.
        Each tenant is read in its own scope, never by a cross-tenant lookup: a slug is matched
        by reading the member tenants one by one."""
        if selector in member_of:
            return await self._read_tenant(selector)
        for ref in member_of:
            tenant = await self._read_tenant(ref)
            if tenant is not None and tenant.slug == selector:
                return tenant
        return None

    async def _read_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._uow.transaction(TenantId(tenant_id)) as tx:
            tenant = await tx.tenants.get(TenantId(tenant_id))
        return tenant if tenant is not None and tenant.id == tenant_id else None


class CreateTenant:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def __call__(
        self,
        slug: str,
        name: str | None = None,
        *,
        actor: str,
        kb_language: str = "simple",
        profile: TenantProfile | None = None,
    ) -> Tenant:
        """``profile``: set with the tenant in one transaction (its names checked beforehand
        by ``ManageTenants.check``)."""
        validate_slug(slug)
        tenant = Tenant(
            id=TenantId(new_id("ten")),
            slug=slug,
            name=name or slug,
            created_at_ms=self._clock.now_ms(),
            kb_language=kb_language,
            profile=profile,
        )
        async with self._uow.admin_transaction(actor, f"tenant.create {slug}") as tx:
            if await tx.tenants.get_by_slug(slug) is not None:
                raise Conflict(f"a tenant with slug {slug!r} already exists")
            await tx.tenants.add(tenant)
            await tx.audit.append(
                tenant.id,
                AuditEvent(
                    actor=f"admin:{actor}",
                    action="tenant.created",
                    subject=tenant.id,
                    details={
                        "slug": slug,
                        "kb_language": kb_language,
                        **_profile_details(tenant.profile),
                    },
                ),
                at_ms=tenant.created_at_ms,
            )
            await tx.commit()
        return tenant


class CreateApiKey:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def __call__(
        self,
        tenant_slug: str,
        role: Role = Role.MEMBER,
        *,
        actor: str,
        expires_in_ms: int | None = None,
        scopes: frozenset[Scope] | None = None,
    ) -> IssuedKey:
        if expires_in_ms is not None and expires_in_ms <= 0:
            raise InvalidInput("an API key's lifetime must be positive")
        if scopes is not None and not scopes:
            raise InvalidInput("a scoped API key needs at least one scope")
        try:
            check_scopes_for_role(role, scopes)
        except InvariantViolated as exc:
            raise InvalidInput(exc.message) from None
        async with self._uow.admin_transaction(
            actor, f"apikey.create {tenant_slug} {role.value}"
        ) as tx:
            tenant = await tx.tenants.get_by_slug(tenant_slug)
            if tenant is None:
                raise NotFound(f"no tenant with slug {tenant_slug!r}")
            now = self._clock.now_ms()
            issued = mint_api_key(
                key_id=ApiKeyId(new_id("key")),
                tenant_id=tenant.id,
                role=role,
                created_at_ms=now,
                expires_at_ms=now + expires_in_ms if expires_in_ms is not None else None,
                scopes=scopes,
            )
            await tx.api_keys.add(issued.key)
            await tx.audit.append(
                tenant.id,
                AuditEvent(
                    actor=f"admin:{actor}",
                    action="apikey.created",
                    subject=issued.key.id,
                    details={
                        "role": role.value,
                        "prefix": issued.key.prefix,
                        "scopes": scopes_text(scopes) or "*",
                    },
                ),
                at_ms=issued.key.created_at_ms,
            )
            await tx.commit()
        return issued


class EnsureDemoTenant:
    """Creates the demo tenant on first start; returns a fresh admin key only when it did."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._create_tenant = CreateTenant(uow, clock)
        self._create_key = CreateApiKey(uow, clock)
        self._uow = uow

    async def __call__(self, *, actor: str = "system:seed") -> IssuedKey | None:
        async with self._uow.admin_transaction(actor, "tenant.ensure-demo") as tx:
            existing = await tx.tenants.get_by_slug(DEMO_TENANT_SLUG)
        if existing is not None:
            return None
        try:
            await self._create_tenant(DEMO_TENANT_SLUG, "Demo Company", actor=actor)
        except Conflict:
            return None  # another process created it first
        return await self._create_key(DEMO_TENANT_SLUG, Role.ADMIN, actor=actor)


class ManageTenants:
    """The operator's provisioning: list, show, suspend, resume and delete tenants, list and
    revoke their keys. Every change is an admin transaction and an entry in the tenant's audit
    trail (a deleted tenant's trail goes with it, after its export)."""

    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        *,
        profiles: TenantProfiles | None = None,
        rules: ProfileRules | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._profiles = profiles
        self._rules = rules

    async def all(self, *, actor: str) -> list[Tenant]:
        async with self._uow.admin_transaction(actor, "tenant.list") as tx:
            return await tx.tenants.list()

    async def page(
        self, *, actor: str, limit: int | None = None, cursor: str | None = None
    ) -> Page[Tenant]:
        """A page of the tenants, by slug."""
        size = check_limit(limit)
        after = str(decode_cursor(cursor, (str,))[0]) if cursor is not None else None
        async with self._uow.admin_transaction(actor, "tenant.list") as tx:
            found = await tx.tenants.list(after=after, limit=size + 1)
        return page_of(found, size, lambda t: (t.slug,))

    async def get(self, slug: str, *, actor: str) -> tuple[Tenant, list[ApiKey]]:
        async with self._uow.admin_transaction(actor, f"tenant.show {slug}") as tx:
            tenant = await self._tenant(tx, slug)
            return tenant, await tx.api_keys.list_for(tenant.id)

    async def set_status(self, slug: str, status: TenantStatus, *, actor: str) -> Tenant:
        async with self._uow.admin_transaction(actor, f"tenant.{status.value} {slug}") as tx:
            tenant = await self._tenant(tx, slug)
            if tenant.status is not status:
                await tx.tenants.set_status(tenant.id, status)
                await tx.audit.append(
                    tenant.id,
                    AuditEvent(
                        actor=f"admin:{actor}",
                        action=f"tenant.{status.value}",
                        subject=tenant.id,
                        details={"from": tenant.status.value},
                    ),
                    at_ms=self._clock.now_ms(),
                )
                tenant.status = status
            await tx.commit()
        if self._profiles is not None:
            self._profiles.learn(tenant)
        return tenant

    async def set_profile(self, slug: str, profile: TenantProfile, *, actor: str) -> Tenant:
        """Puts the tenant on a plan and limits its tools and models (None: the deployment's
        defaults), after checking each name against what the deployment defines."""
        self.check(profile)
        async with self._uow.admin_transaction(actor, f"tenant.profile {slug}") as tx:
            tenant = await self._tenant(tx, slug)
            if tenant.profile != profile:
                await tx.tenants.set_profile(tenant.id, profile)
                await tx.audit.append(
                    tenant.id,
                    AuditEvent(
                        actor=f"admin:{actor}",
                        action="tenant.profile.changed",
                        subject=tenant.id,
                        details=_profile_details(profile),
                    ),
                    at_ms=self._clock.now_ms(),
                )
                tenant.profile = profile
            await tx.commit()
        if self._profiles is not None:
            self._profiles.learn(tenant)
        return tenant

    def check(self, profile: TenantProfile) -> None:
        """Raises ``InvalidInput`` naming any plan, tool or model the deployment lacks."""
        rules = self._rules
        if rules is None:
            return
        if profile.plan is not None and profile.plan not in rules.plans:
            raise InvalidInput(
                f"no plan named {profile.plan!r}: the plans are {', '.join(sorted(rules.plans))}"
            )
        for kind, names, known in (
            ("tool", profile.tools, rules.tools),
            ("model", profile.models, rules.models),
        ):
            unknown = sorted((names or frozenset()) - known)
            if unknown:
                raise InvalidInput(
                    f"unknown {kind} {', '.join(map(repr, unknown))}: "
                    f"this deployment has {', '.join(sorted(known)) or 'none'}"
                )

    async def revoke_key(self, slug: str, key_id: str, *, actor: str) -> None:
        async with self._uow.admin_transaction(actor, f"apikey.revoke {slug} {key_id}") as tx:
            tenant = await self._tenant(tx, slug)
            if not await tx.api_keys.revoke(tenant.id, key_id):
                raise NotFound(f"tenant {slug} has no API key {key_id}")
            await tx.audit.append(
                tenant.id,
                AuditEvent(actor=f"admin:{actor}", action="apikey.revoked", subject=key_id),
                at_ms=self._clock.now_ms(),
            )
            await tx.commit()
        if self._profiles is not None:
            self._profiles.revoked(f"apikey:{key_id}")

    async def delete(self, slug: str, *, actor: str) -> Tenant:
        async with self._uow.admin_transaction(actor, f"tenant.delete {slug}") as tx:
            tenant = await self._tenant(tx, slug)
            await tx.tenants.delete(tenant.id)
            await tx.commit()
        if self._profiles is not None:
            self._profiles.forget(tenant)
        return tenant

    @staticmethod
    async def _tenant(tx: AdminTransaction, slug: str) -> Tenant:
        tenant = await tx.tenants.get_by_slug(slug)
        if tenant is None:
            raise NotFound(f"no tenant with slug {slug!r}")
        return tenant


def _profile_details(profile: TenantProfile) -> dict[str, str]:
    def names(value: frozenset[str] | None) -> str:
        return "*" if value is None else " ".join(sorted(value))[:500]

    return {
        "plan": profile.plan or "*",
        "tools": names(profile.tools),
        "models": names(profile.models),
    }
