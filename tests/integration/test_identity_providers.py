"""Tokens from Auth0 and Keycloak, in the claim shapes those providers document, verified
against RS256 keys published over real HTTP at each provider's documented JWKS path, and a
person who belongs to several tenants choosing one with ``X-Tenant-ID``.

- Auth0 (https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles): issuer
  ``https://<tenant>.auth0.com/``, ``aud`` a list of the API identifier and the userinfo
  endpoint, ``sub`` ``auth0|<id>``, ``azp``, ``scope``, and namespaced custom claims whose
  names are URLs (dots and slashes included).
- Keycloak: issuer ``<base>/realms/<realm>``, keys at
  ``/realms/<realm>/protocol/openid-connect/certs``, ``typ: Bearer``, ``realm_access.roles``
  and ``resource_access.<client>.roles`` lists holding Keycloak's own default roles beside
  ours, and a multivalued user attribute mapped into the token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from application.tenancy.use_cases import CreateTenant, ManageTenants
from domain.tenancy.model import TenantStatus
from tests.idp import Jwks
from tests.integration.test_http_api import Api, make_api, run_body

AUTH0_ISSUER = "https://sba-test.eu.auth0.com/"
AUTH0_API = "https://api.sba.example.com"
NAMESPACE = "https://sba.example.com/"
KEYCLOAK_ISSUER = "https://id.example.com/realms/acme"
KEYCLOAK_CLIENT = "sba-api"


def rs256(private: rsa.RSAPrivateKey, kid: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


def auth0_claims(tenants: Any, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": AUTH0_ISSUER,
        "sub": "auth0|6553da60a54af58e29493993",
        "aud": [AUTH0_API, f"{AUTH0_ISSUER}userinfo"],
        "iat": now,
        "exp": now + 86400,
        "azp": "K1AUPhZq8mRi0Q0pjhkfu1D7y6KjDQja",
        "scope": "openid profile email",
        f"{NAMESPACE}tenants": tenants,
        **over,
    }


def keycloak_claims(tenants: list[str], client_roles: list[str], **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "iss": KEYCLOAK_ISSUER,
        "aud": [KEYCLOAK_CLIENT, "account"],
        "sub": str(uuid.uuid4()),
        "typ": "Bearer",
        "azp": "sba-web",
        "sid": str(uuid.uuid4()),
        "acr": "1",
        "allowed-origins": ["https://app.example.com"],
        "realm_access": {"roles": ["offline_access", "default-roles-acme", "uma_authorization"]},
        "resource_access": {
            KEYCLOAK_CLIENT: {"roles": client_roles},
            "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]},
        },
        "scope": "openid email profile",
        "email_verified": True,
        "preferred_username": "ana",
        "sba_tenants": tenants,
        **over,
    }


class World:
    def __init__(self, api: Api, jwks: Jwks, kid: str, private: rsa.RSAPrivateKey) -> None:
        self.api, self.jwks, self.kid, self.private = api, jwks, kid, private
        self.ids: dict[str, str] = {}

    async def tenant(self, slug: str) -> str:
        tenant = await (await self.api.container.get(CreateTenant))(slug, actor="test")
        self.ids[slug] = tenant.id
        return tenant.id

    def token(self, claims: dict[str, Any]) -> str:
        return rs256(self.private, self.kid, claims)

    async def documents(self, token: str, **headers: str):
        return await self.api.client.get(
            "/v1/kb/documents", headers={"Authorization": f"Bearer {token}", **headers}
        )

    async def add_document(self, token: str, **headers: str):
        return await self.api.client.post(
            "/v1/kb/documents",
            content=json.dumps({"id": f"d-{uuid.uuid4().hex[:8]}", "title": "T", "content": "x y"}),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **headers,
            },
        )


async def world_for(tmp_path, path: str, **env: str) -> AsyncIterator[World]:
    jwks = Jwks(path)
    try:
        kid, private = jwks.new_rsa_key()
        async for api in make_api(
            tmp_path,
            SBA_AUTH__JWT__JWKS_URL=jwks.url,
            SBA_AUTH__JWT__ALGORITHMS='["RS256"]',
            SBA_AUTH__CACHE_TTL_MS="0",
            **env,
        ):
            yield World(api, jwks, kid, private)
    finally:
        jwks.close()


@pytest.fixture
async def auth0(tmp_path) -> AsyncIterator[World]:
    async for w in world_for(
        tmp_path,
        "/.well-known/jwks.json",
        SBA_AUTH__JWT__ISSUER=AUTH0_ISSUER,
        SBA_AUTH__JWT__AUDIENCE=AUTH0_API,
        SBA_AUTH__JWT__TENANT_CLAIM=f"{NAMESPACE}tenants",
        SBA_AUTH__JWT__ROLE_CLAIM=f"{NAMESPACE}role",
    ):
        yield w


@pytest.fixture
async def keycloak(tmp_path) -> AsyncIterator[World]:
    async for w in world_for(
        tmp_path,
        "/realms/acme/protocol/openid-connect/certs",
        SBA_AUTH__JWT__ISSUER=KEYCLOAK_ISSUER,
        SBA_AUTH__JWT__AUDIENCE=KEYCLOAK_CLIENT,
        SBA_AUTH__JWT__TENANT_CLAIM="sba_tenants",
        SBA_AUTH__JWT__ROLE_CLAIM=f"resource_access.{KEYCLOAK_CLIENT}.roles",
        SBA_AUTH__JWT__ROLE_PREFIX="sba-",
        SBA_AUTH__JWT__DEFAULT_ROLE="readonly",
    ):
        yield w


def assert_problem(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_an_auth0_member_of_two_tenants_chooses_each_by_slug_or_id(auth0: World) -> None:
    acme, globex = await auth0.tenant("acme"), await auth0.tenant("globex")
    token = auth0.token(auth0_claims({acme: "admin", globex: "readonly"}))

    # Each tenant is reached by its slug or its id, with the role the map gives there.
    assert (await auth0.add_document(token, **{"X-Tenant-ID": "acme"})).status_code == 201
    assert (await auth0.add_document(token, **{"X-Tenant-ID": acme})).status_code == 201
    assert_problem(await auth0.add_document(token, **{"X-Tenant-ID": "globex"}), 403, "forbidden")
    listed = await auth0.documents(token, **{"X-Tenant-ID": globex})
    assert listed.status_code == 200 and listed.json()["documents"] == []
    acme_docs = await auth0.documents(token, **{"X-Tenant-ID": "acme"})
    assert len(acme_docs.json()["documents"]) == 2

    # Several tenants and none chosen: the person is asked to choose, nothing is guessed.
    assert_problem(await auth0.documents(token), 422, "tenant_required")


async def test_a_tenant_the_person_does_not_belong_to_is_refused_by_slug_and_by_id(
    auth0: World,
) -> None:
    acme, initech = await auth0.tenant("acme"), await auth0.tenant("initech")
    token = auth0.token(auth0_claims([acme]))
    assert (await auth0.documents(token)).status_code == 200  # one tenant: no header needed
    for selector in ("initech", initech, "demo", "no-such-tenant"):
        response = await auth0.documents(token, **{"X-Tenant-ID": selector})
        assert_problem(response, 403, "not_a_member")
        assert "initech" not in response.json()["detail"] or selector == "initech"


async def test_auth0_namespaced_role_applies_to_listed_tenants(auth0: World) -> None:
    acme = await auth0.tenant("acme")
    reader = auth0.token(auth0_claims([acme], **{f"{NAMESPACE}role": "readonly"}))
    writer = auth0.token(auth0_claims([acme], **{f"{NAMESPACE}role": "member"}))
    assert_problem(await auth0.add_document(reader), 403, "forbidden")
    assert (await auth0.add_document(writer)).status_code == 201


async def test_a_suspended_member_tenant_is_refused_while_the_others_work(auth0: World) -> None:
    acme, globex = await auth0.tenant("acme"), await auth0.tenant("globex")
    await (await auth0.api.container.get(ManageTenants)).set_status(
        "globex", TenantStatus.SUSPENDED, actor="test"
    )
    token = auth0.token(auth0_claims({acme: "member", globex: "member"}))
    assert (await auth0.documents(token, **{"X-Tenant-ID": "acme"})).status_code == 200
    assert_problem(await auth0.documents(token, **{"X-Tenant-ID": "globex"}), 403, "forbidden")


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param({"tenants": "missing"}, id="no tenants claim"),
        pytest.param({f"{NAMESPACE}tenants": []}, id="empty list"),
        pytest.param({f"{NAMESPACE}tenants": {}}, id="empty map"),
        pytest.param({f"{NAMESPACE}tenants": 7}, id="a number"),
        pytest.param({f"{NAMESPACE}tenants": [["nested"]]}, id="a nested list"),
        pytest.param({f"{NAMESPACE}tenants": {"ten_x": "owner"}}, id="a role not ours"),
        pytest.param({f"{NAMESPACE}tenants": [f"ten_{i}" for i in range(101)]}, id="too many"),
    ],
)
async def test_unfit_membership_claims_are_401_problems(auth0: World, claim) -> None:
    claims = auth0_claims(None)
    del claims[f"{NAMESPACE}tenants"]
    claims.update({k: v for k, v in claim.items() if k != "tenants"})
    assert_problem(await auth0.documents(auth0.token(claims)), 401, "unauthenticated")


async def test_a_keycloak_token_takes_its_role_from_the_client_roles(keycloak: World) -> None:
    acme = await keycloak.tenant("acme")
    admin = keycloak.token(keycloak_claims([acme], ["sba-admin", "sba-member", "uma_protection"]))
    # Only Keycloak's own roles: the configured default (read-only) applies.
    plain = keycloak.token(keycloak_claims([acme], ["uma_protection"]))
    assert (await keycloak.add_document(admin)).status_code == 201
    assert_problem(await keycloak.add_document(plain), 403, "forbidden")
    assert (await keycloak.documents(plain)).status_code == 200


async def test_a_keycloak_member_of_two_tenants_runs_an_agent_in_the_chosen_one(
    keycloak: World,
) -> None:
    acme, globex = await keycloak.tenant("acme"), await keycloak.tenant("globex")
    token = keycloak.token(keycloak_claims([acme, globex], ["sba-member"]))
    response = await keycloak.api.client.post(
        "/v1/agents/assistant/runs",
        content=json.dumps(run_body()),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-Tenant-ID": "globex",
        },
    )
    assert response.status_code == 200, response.text
    assert "RUN_FINISHED" in response.text
    # The run belongs to the chosen tenant only.
    for slug, expected in (("globex", 200), ("acme", 404)):
        found = await keycloak.api.client.get(
            "/v1/runs/r1", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": slug}
        )
        assert found.status_code == expected, (slug, found.text)


async def test_a_keycloak_token_for_another_audience_is_refused(keycloak: World) -> None:
    acme = await keycloak.tenant("acme")
    token = keycloak.token(keycloak_claims([acme], ["sba-admin"], aud=["account"]))
    assert_problem(await keycloak.documents(token), 401, "unauthenticated")


async def test_auth0_scopes_limit_a_token_when_a_scope_claim_is_configured(tmp_path) -> None:
    async for w in world_for(
        tmp_path,
        "/.well-known/jwks.json",
        SBA_AUTH__JWT__ISSUER=AUTH0_ISSUER,
        SBA_AUTH__JWT__AUDIENCE=AUTH0_API,
        SBA_AUTH__JWT__TENANT_CLAIM=f"{NAMESPACE}tenants",
        SBA_AUTH__JWT__SCOPE_CLAIM="scope",
    ):
        acme = await w.tenant("acme")
        reader = w.token(auth0_claims([acme], scope="openid profile email kb:read"))
        assert (await w.documents(reader)).status_code == 200
        assert_problem(await w.add_document(reader), 403, "insufficient_scope")
        writer = w.token(auth0_claims([acme], scope="openid kb:read kb:write"))
        assert (await w.add_document(writer)).status_code == 201
        # Configured but absent: the token is granted none of our scopes.
        bare = auth0_claims([acme])
        del bare["scope"]
        assert_problem(await w.documents(w.token(bare)), 403, "insufficient_scope")
