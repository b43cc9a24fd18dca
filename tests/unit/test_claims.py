"""Reading memberships and roles out of identity-provider claims: the documented shapes, and
properties over arbitrary JSON (a malformed claim is a 401, never a crash)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from application.errors import Unauthenticated
from application.tenancy.claims import (
    MAX_MEMBERSHIPS,
    ClaimMapping,
    claim_at,
    memberships,
    scopes_from,
)
from domain.errors import InvariantViolated
from domain.tenancy.model import Role, Scope, parse_scopes, scopes_text

SUPABASE = ClaimMapping()
AUTH0 = ClaimMapping(tenants="https://sba.example.com/tenants", role="https://sba.example.com/role")
KEYCLOAK = ClaimMapping(
    tenants="sba_tenants",
    role="resource_access.sba-api.roles",
    role_prefix="sba-",
    default_role=Role.READONLY,
)


def test_supabase_one_tenant_in_app_metadata() -> None:
    claims = {"app_metadata": {"tenant_id": "ten_a", "sba_role": "admin", "provider": "email"}}
    assert memberships(claims, SUPABASE) == {"ten_a": Role.ADMIN}
    assert memberships({"app_metadata": {"tenant_id": "ten_a"}}, SUPABASE) == {"ten_a": Role.MEMBER}


def test_supabase_tenant_map_in_app_metadata() -> None:
    mapping = ClaimMapping(tenants="app_metadata.tenants")
    claims = {"app_metadata": {"tenants": {"ten_a": "admin", "ten_b": "readonly"}}}
    assert memberships(claims, mapping) == {"ten_a": Role.ADMIN, "ten_b": Role.READONLY}


def test_auth0_namespaced_claims_are_found_whole() -> None:
    claims = {
        "https://sba.example.com/tenants": ["ten_a", "ten_b"],
        "https://sba.example.com/role": "member",
        "sub": "auth0|1",
    }
    assert memberships(claims, AUTH0) == {"ten_a": Role.MEMBER, "ten_b": Role.MEMBER}


def test_keycloak_client_roles_grant_the_most_capable_of_ours() -> None:
    claims = {
        "sba_tenants": ["ten_a"],
        "resource_access": {"sba-api": {"roles": ["sba-readonly", "sba-admin", "uma_protection"]}},
    }
    assert memberships(claims, KEYCLOAK) == {"ten_a": Role.ADMIN}
    claims["resource_access"]["sba-api"]["roles"] = ["uma_protection", "admin"]  # no prefix
    assert memberships(claims, KEYCLOAK) == {"ten_a": Role.READONLY}


def test_a_map_entry_without_a_role_takes_the_role_claim() -> None:
    mapping = ClaimMapping(tenants="t", role="r")
    assert memberships({"t": {"ten_a": None, "ten_b": "admin"}, "r": "readonly"}, mapping) == {
        "ten_a": Role.READONLY,
        "ten_b": Role.ADMIN,
    }


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"t": ""},
        {"t": []},
        {"t": {}},
        {"t": 1},
        {"t": True},
        {"t": [1]},
        {"t": [""]},
        {"t": {"ten_a": "owner"}},
        {"t": {"ten_a": {"role": "admin"}}},
        {"t": "ten_a", "r": "superuser"},
        {"t": "ten_a", "r": 3},
        {"t": [f"ten_{i}" for i in range(MAX_MEMBERSHIPS + 1)]},
    ],
)
def test_unfit_claims_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        memberships(claims, ClaimMapping(tenants="t", role="r"))


def test_claim_paths_find_literal_dotted_names_and_nested_maps() -> None:
    # "a.b" finds the literal claim first, then the nested one.
    assert claim_at({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert claim_at({"a": {"b": 2}}, "a.b") == 2
    assert claim_at({"a": {"b": 2}}, "a.c") is None
    assert claim_at({"a": 1}, "a.b") is None
    # A longer literal name that is not a map does not hide a nested path.
    assert claim_at({"https://x.io": 1, "https://x": {"io/t": 2}}, "https://x.io/t") == 2


_names = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(st.lists(_names, min_size=1, max_size=5), st.integers())
def test_a_dotted_path_reaches_the_value_it_names(path: list[str], leaf: int) -> None:
    claims: Any = leaf
    for name in reversed(path):
        claims = {name: claims}
    assert claim_at(claims, ".".join(path)) == leaf


@given(st.dictionaries(st.text(max_size=8), _json, max_size=5), st.text(max_size=12))
def test_any_claims_give_memberships_or_a_401(claims: dict[str, Any], path: str) -> None:
    mapping = ClaimMapping(tenants=path or "t", role="r")
    try:
        found = memberships(claims, mapping)
    except Unauthenticated:
        return
    assert 0 < len(found) <= MAX_MEMBERSHIPS
    assert all(isinstance(t, str) and t for t in found)
    assert all(isinstance(r, Role) for r in found.values())


@given(st.lists(st.sampled_from([*Role, "offline_access", "sba-admin", "x"]), max_size=6))
def test_a_role_list_grants_the_most_capable_role_it_holds(roles: list[str]) -> None:
    found = memberships({"t": "ten_a", "r": list(roles)}, ClaimMapping(tenants="t", role="r"))
    ours = [Role(r) for r in roles if r in Role.__members__.values()]
    expected = min(ours, key=[Role.ADMIN, Role.MEMBER, Role.READONLY].index, default=Role.MEMBER)
    assert found == {"ten_a": expected}


@given(st.sets(st.sampled_from(list(Scope)), min_size=1))
def test_scopes_are_stored_as_text_and_read_back_exactly(scopes: set[Scope]) -> None:
    text = scopes_text(frozenset(scopes))
    assert text is not None
    assert parse_scopes(text.split()) == scopes
    assert scopes_text(None) is None


@pytest.mark.parametrize("names", [[], ["runs", "admin"], ["RUNS"], ["kb:*"]])
def test_unknown_or_no_scope_names_are_refused(names: list[str]) -> None:
    with pytest.raises(InvariantViolated):
        parse_scopes(names)


@given(
    st.one_of(
        st.none(),
        st.text(max_size=40),
        st.lists(st.one_of(st.sampled_from([*Scope, "openid", "email"]), st.integers())),
    )
)
def test_token_scopes_keep_ours_and_ignore_the_rest(value: Any) -> None:
    mapping = ClaimMapping(scopes="scope")
    granted = scopes_from({} if value is None else {"scope": value}, mapping)
    assert granted is not None
    names = value.split() if isinstance(value, str) else value or []
    assert granted == {Scope(n) for n in names if n in Scope.__members__.values()}
    assert scopes_from({"scope": "runs"}, ClaimMapping()) is None  # not configured: unlimited
