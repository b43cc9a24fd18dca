"""Tenants, API keys and the principal a request acts as."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from domain.errors import InvariantViolated
from domain.ids import ApiKeyId, TenantId

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
KEY_PREFIX = "sba"


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    READONLY = "readonly"


class Scope(enum.StrEnum):
    """What a credential may be used for, beside its role: a key for a website's chat widget
    needs ``runs`` and nothing else. ``runs`` covers starting, following, cancelling and
    resuming runs (answering interrupts included) and reading the messages of a thread named
    by id. Listing, renaming and deleting the tenant's threads takes ``threads:read`` and
    ``threads:write`` (a widget's key must not enumerate every visitor's conversation); tasks
    take ``tasks:read`` and ``tasks:write``. The list of tools a tenant's agent offers is
    readable with any scope."""

    RUNS = "runs"
    KB_READ = "kb:read"
    KB_WRITE = "kb:write"
    RENDERS = "renders"
    USAGE_READ = "usage:read"
    THREADS_READ = "threads:read"
    THREADS_WRITE = "threads:write"
    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"


# Scopes whose every use changes something: a read-only credential could never use them.
WRITE_ONLY_SCOPES = frozenset({Scope.KB_WRITE, Scope.THREADS_WRITE, Scope.TASKS_WRITE})


def check_scopes_for_role(role: Role, scopes: frozenset[Scope] | None) -> None:
    """A credential is not minted with a scope its role can never use."""
    if role is Role.READONLY and scopes is not None and scopes & WRITE_ONLY_SCOPES:
        useless = ", ".join(s.value for s in Scope if s in scopes & WRITE_ONLY_SCOPES)
        raise InvariantViolated(
            f"a read-only key could never use {useless}: give it a writing role or drop the scope"
        )


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scope names as scopes; an unknown name is an error, never silently dropped."""
    found: set[Scope] = set()
    for name in names:
        if name not in Scope.__members__.values():
            raise InvariantViolated(
                f"unknown scope {name!r}: use one of {', '.join(s.value for s in Scope)}"
            )
        found.add(Scope(name))
    if not found:
        raise InvariantViolated("a scoped credential needs at least one scope")
    return frozenset(found)


def scopes_text(scopes: frozenset[Scope] | None) -> str | None:
    """Scopes as stored: space-separated names in a stable order (None: unrestricted)."""
    return None if scopes is None else " ".join(s.value for s in Scope if s in scopes)


class TenantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


def validate_slug(slug: str) -> str:
    if not SLUG_RE.fullmatch(slug):
        raise InvariantViolated(
            f"tenant slug {slug!r} must be 1-63 lowercase letters, digits or inner hyphens"
        )
    return slug


# Text-search configurations Postgres ships: the language a tenant's knowledge base is stemmed
# in ("simple": no stemming, any language). SQLite's FTS5 index ignores it.
KB_LANGUAGES = frozenset(
    [
        "simple",
        "arabic",
        "armenian",
        "basque",
        "catalan",
        "danish",
        "dutch",
        "english",
        "finnish",
        "french",
        "german",
        "greek",
        "hindi",
        "hungarian",
        "indonesian",
        "irish",
        "italian",
        "lithuanian",
        "nepali",
        "norwegian",
        "portuguese",
        "romanian",
        "russian",
        "serbian",
        "spanish",
        "swedish",
        "tamil",
        "turkish",
        "yiddish",
    ]
)


def validate_kb_language(language: str) -> str:
    if language not in KB_LANGUAGES:
        raise InvariantViolated(
            f"knowledge-base language {language!r} is not one of: {', '.join(sorted(KB_LANGUAGES))}"
        )
    return language


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantProfile:
    """What an operator sets per tenant; None everywhere means the deployment's defaults.

    - ``plan``: the named plan (rate limits, run caps, token budget) the tenant is on;
    - ``tools``: the only tools its agent may use;
    - ``models``: the only entries of the model chain it may be answered by (in the chain's
      order)."""

    plan: str | None = None
    tools: frozenset[str] | None = None
    models: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and not self.plan.strip():
            raise InvariantViolated("a plan name cannot be blank")
        if self.models is not None and not self.models:
            raise InvariantViolated("a tenant needs at least one model it may use")


class Tenant:
    __slots__ = ("created_at_ms", "id", "kb_language", "name", "profile", "slug", "status")

    def __init__(
        self,
        *,
        id: TenantId,
        slug: str,
        name: str,
        created_at_ms: int,
        status: TenantStatus = TenantStatus.ACTIVE,
        kb_language: str = "simple",
        profile: TenantProfile | None = None,
    ) -> None:
        self.id = id
        self.slug = validate_slug(slug)
        if not name.strip():
            raise InvariantViolated("tenant name cannot be blank")
        self.name = name
        self.status = status
        self.created_at_ms = created_at_ms
        self.kb_language = validate_kb_language(kb_language)
        self.profile = profile if profile is not None else TenantProfile()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tenant) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A stored key: only the lookup prefix and a digest of the secret, never the secret."""

    id: ApiKeyId
    tenant_id: TenantId
    prefix: str
    secret_digest: str
    role: Role
    created_at_ms: int
    revoked: bool = False
    expires_at_ms: int | None = None
    last_used_at_ms: int | None = None
    # None: whatever the role allows; otherwise only these.
    scopes: frozenset[Scope] | None = None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_digest, digest_secret(secret))

    def refusal(self, now_ms: int) -> str | None:
        """Why the key cannot be used at ``now_ms``, or None when it can."""
        if self.revoked:
            return "the API key was revoked"
        if self.expires_at_ms is not None and now_ms >= self.expires_at_ms:
            return "the API key expired"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedKey:
    """A freshly minted key: ``plaintext`` is shown once and never stored."""

    key: ApiKey
    plaintext: str


def digest_secret(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast digest is enough; no password stretching.
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_api_key(
    *,
    key_id: ApiKeyId,
    tenant_id: TenantId,
    role: Role,
    created_at_ms: int,
    expires_at_ms: int | None = None,
    scopes: frozenset[Scope] | None = None,
) -> IssuedKey:
    if expires_at_ms is not None and expires_at_ms <= created_at_ms:
        raise InvariantViolated("an API key must expire after it is created")
    if scopes is not None and not scopes:
        raise InvariantViolated("a scoped API key needs at least one scope")
    check_scopes_for_role(role, scopes)
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id,
        tenant_id=tenant_id,
        prefix=prefix,
        secret_digest=digest_secret(secret),
        role=role,
        created_at_ms=created_at_ms,
        expires_at_ms=expires_at_ms,
        scopes=scopes,
    )
    return IssuedKey(key=key, plaintext=f"{KEY_PREFIX}_{prefix}_{secret}")


def split_api_key(plaintext: str) -> tuple[str, str] | None:
    """``sba_<prefix>_<secret>`` → (prefix, secret), or None when it is not of that shape."""
    head, sep, rest = plaintext.partition("_")
    if head != KEY_PREFIX or not sep:
        return None
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix, secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a request acts as, inside one tenant, and what for (``scopes``: None when only the
    role limits it)."""

    tenant_id: TenantId
    tenant_slug: str
    subject: str
    role: Role
    scopes: frozenset[Scope] | None = None

    @property
    def can_write(self) -> bool:
        return self.role is not Role.READONLY

    def allows(self, scope: Scope) -> bool:
        return self.scopes is None or scope in self.scopes


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminLogEntry:
    """One cross-tenant transaction: who, what, when. Recorded before the work starts."""

    at_ms: int
    actor: str
    action: str
