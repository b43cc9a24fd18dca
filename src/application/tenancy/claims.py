"""From an identity provider's claims to the tenants a person belongs to and their role in each.

Providers put this in different places and shapes, so where to look is configured as claim
paths and the value found there may take any of the shapes they use:

- Supabase: ``app_metadata.tenant_id`` (one tenant) or ``app_metadata.tenants`` (a map from
  tenant to role), with the role at ``app_metadata.sba_role``;
- Auth0: namespaced custom claims, whose names contain dots and slashes
  (``https://sba.example.com/tenants``), holding a list or a map;
- Keycloak: a multivalued user attribute (a list of tenants) and client roles at
  ``resource_access.<client>.roles``, a list beside Keycloak's own default roles.

Memberships name tenants by id (slugs can be renamed; ids cannot). ``X-Tenant-ID`` may
then choose among them by id or slug."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from application.errors import Unauthenticated
from domain.tenancy.model import Role, Scope

# A person in more tenants than this is refused rather than carried around on every request.
MAX_MEMBERSHIPS = 100
# The most capable role first: a list of roles grants the first of these it contains.
_BY_RANK = (Role.ADMIN, Role.MEMBER, Role.READONLY)


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    """Where a token's claims say which tenants the person belongs to (``tenants``) and with
    which role (``role``, used where the tenants claim does not give one per tenant).
    ``role_prefix`` is stripped from role names (``sba-admin`` → ``admin``) so an identity
    provider's roles can be namespaced. The defaults fit Supabase Auth, whose ``app_metadata``
    only the service can write."""

    tenants: str = "app_metadata.tenant_id"
    role: str = "app_metadata.sba_role"
    default_role: Role = Role.MEMBER
    role_prefix: str = ""
    # Where the OAuth scopes are (Auth0 and Keycloak: ``scope``); empty: tokens are not limited
    # by scope, only by role.
    scopes: str = ""


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the claims, or None. A claim whose own name contains dots
    (Auth0's ``https://example.com/roles``) is matched whole: at each level the longest name
    that is a key is taken first."""
    if path in claims:
        return claims[path]
    end = path.rfind(".")
    while end > 0:
        head = path[:end]
        node = claims.get(head)
        if isinstance(node, Mapping):
            found = claim_at(node, path[end + 1 :])
            if found is not None:
                return found
        end = path.rfind(".", 0, end)
    return None


def _role_named(name: str, prefix: str) -> Role | None:
    if prefix:
        if not name.startswith(prefix):
            return None
        name = name[len(prefix) :]
    return Role(name) if name in Role.__members__.values() else None


def role_from(value: Any, mapping: ClaimMapping) -> Role:
    """A role claim's value as a role.

    - absent: the default role;
    - a string: that role, refused when it is not one of ours;
    - a list: the most capable of ours it contains, ignoring the provider's other roles (the
      default role when there are none)."""
    if value is None:
        return mapping.default_role
    if isinstance(value, str):
        role = _role_named(value, mapping.role_prefix)
        if role is None:
            raise Unauthenticated(f"the token's role {value!r} is not one of ours")
        return role
    if isinstance(value, list):
        granted = {
            role
            for item in value
            if isinstance(item, str) and (role := _role_named(item, mapping.role_prefix))
        }
        return next((r for r in _BY_RANK if r in granted), mapping.default_role)
    raise Unauthenticated(f"the token's role claim {mapping.role} is neither a name nor a list")


def memberships(claims: Mapping[str, Any], mapping: ClaimMapping) -> dict[str, Role]:
    """The tenants (by id) the claims make the person a member of, with the role in
    each. The tenants claim may be one tenant, a list of tenants, or a map from tenant to its
    role (a name or a list of names); the role claim applies to tenants given without one."""
    value = claim_at(claims, mapping.tenants)
    found: dict[str, Role] = {}
    if isinstance(value, str):
        if value:
            found[value] = role_from(claim_at(claims, mapping.role), mapping)
    elif isinstance(value, list):
        if value:
            role = role_from(claim_at(claims, mapping.role), mapping)
            for item in value:
                if not isinstance(item, str) or not item:
                    raise Unauthenticated(
                        f"the token's tenants claim {mapping.tenants} lists a non-name"
                    )
                found[item] = role
    elif isinstance(value, Mapping):
        for tenant, tenant_role in value.items():
            if not isinstance(tenant, str) or not tenant:
                raise Unauthenticated(f"the token's tenants claim {mapping.tenants} is malformed")
            found[tenant] = role_from(
                tenant_role if tenant_role is not None else claim_at(claims, mapping.role),
                mapping,
            )
    elif value is not None:
        raise Unauthenticated(
            f"the token's tenants claim {mapping.tenants} is neither a name, a list nor a map"
        )
    if not found:
        raise Unauthenticated(f"the token names no tenant (claim {mapping.tenants})")
    if len(found) > MAX_MEMBERSHIPS:
        raise Unauthenticated(f"the token names more than {MAX_MEMBERSHIPS} tenants")
    return found


def scopes_from(claims: Mapping[str, Any], mapping: ClaimMapping) -> frozenset[Scope] | None:
    """The scopes of ours a token grants (None when scopes are not configured). The claim is a
    space-separated string (RFC 8693 and 9068) or a list; other scopes (``openid``, ``email``)
    are ignored, and a token without the claim is granted none."""
    if not mapping.scopes:
        return None
    value = claim_at(claims, mapping.scopes)
    names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(
        Scope(n) for n in names if isinstance(n, str) and n in Scope.__members__.values()
    )
