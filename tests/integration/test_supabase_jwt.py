"""Supabase Auth tokens end to end: ES256 JWTs in the claim shape Supabase documents
(https://supabase.com/docs/guides/auth/jwt-fields), verified against a JWKS served over real
HTTP in the documented place (``<issuer>/.well-known/jwks.json``), mapped to a principal from
``app_metadata``. Every forgery gets a 401 problem, never a 500."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from application.ports import UnitOfWork
from application.tenancy.use_cases import Authenticate
from entrypoints.ioc.container import make_container
from entrypoints.settings import SettingsError, load_settings
from tests.idp import Jwks
from tests.integration.test_http_api import Api, make_api

ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1"


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    j = Jwks("/auth/v1/.well-known/jwks.json")
    yield j
    j.close()


def supabase_claims(tenant_id: str | None, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    app_metadata: dict[str, Any] = {"provider": "email", "providers": ["email"]}
    if tenant_id is not None:
        app_metadata["tenant_id"] = tenant_id
    return {
        "iss": ISSUER,
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "ana@example.com",
        "phone": "",
        "app_metadata": app_metadata,
        "user_metadata": {"full_name": "Ana"},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
        **over,
    }


async def api_with(tmp_path, jwks: Jwks, **env: str) -> AsyncIterator[tuple[Api, str]]:
    async for api in make_api(
        tmp_path,
        SBA_AUTH__JWT__ISSUER=ISSUER,
        SBA_AUTH__JWT__JWKS_URL=jwks.url,
        SBA_AUTH__CACHE_TTL_MS="0",
        **env,
    ):
        uow = await api.container.get(UnitOfWork)
        async with uow.admin_transaction("test", "read demo") as tx:
            demo = await tx.tenants.get_by_slug("demo")
        assert demo is not None
        yield api, demo.id


@pytest.fixture
async def world(tmp_path, jwks) -> AsyncIterator[tuple[Api, str]]:
    # These tests send more refused tokens from one address than the failed-authentication
    # limit lets through (tests/security/test_auth_failures.py holds that limit).
    async for w in api_with(tmp_path, jwks, SBA_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE="0"):
        yield w


async def documents(api: Api, token: str, **headers: str):
    return await api.client.get(
        "/v1/kb/documents", headers={"Authorization": f"Bearer {token}", **headers}
    )


def es256(private: ec.EllipticCurvePrivateKey, kid: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})


async def test_a_supabase_token_acts_for_the_tenant_in_its_app_metadata(world, jwks) -> None:
    api, tenant = world
    kid, private = jwks.new_key()
    response = await documents(api, es256(private, kid, supabase_claims(tenant)))
    assert response.status_code == 200, response.text
    assert any(d["id"] == "demo-refunds" for d in response.json()["documents"])
    # The API key keeps working beside tokens.
    assert (await api.client.get("/v1/kb/documents", headers=api.auth())).status_code == 200


def _forgeries(tenant: str, kid: str, private, public_pem: bytes) -> dict[str, str]:
    now = int(time.time())
    good = es256(private, kid, supabase_claims(tenant))
    head, _, signature = good.split(".")
    other = jwt.utils.base64url_encode(
        json.dumps(supabase_claims("ten_someone_else")).encode()
    ).decode()
    return {
        "expired": es256(private, kid, supabase_claims(tenant, exp=now - 120, iat=now - 3720)),
        "not yet valid": es256(private, kid, supabase_claims(tenant, nbf=now + 600)),
        "anon audience": es256(private, kid, supabase_claims(tenant, aud="anon")),
        "other issuer": es256(
            private, kid, supabase_claims(tenant, iss="https://evil.supabase.co/auth/v1")
        ),
        "alg none": jwt.encode(supabase_claims(tenant), None, algorithm="none"),
        "HS256 with the public key": _hs256_with(public_pem, kid, supabase_claims(tenant)),
        "unknown kid": es256(private, "not-a-kid", supabase_claims(tenant)),
        "tampered payload": f"{head}.{other}.{signature}",
        "tenant only in user_metadata": es256(
            private,
            kid,
            supabase_claims(None, user_metadata={"tenant_id": tenant}),
        ),
        "unknown tenant": es256(private, kid, supabase_claims("ten_does_not_exist")),
        "not a role of ours": es256(
            private,
            kid,
            supabase_claims(None, app_metadata={"tenant_id": tenant, "sba_role": "superuser"}),
        ),
        "garbage": "a.b.c",
    }


def _hs256_with(secret: bytes, kid: str, claims: dict[str, Any]) -> str:
    """The algorithm-confusion attack: HMAC-signed with the (public) verification key."""

    def b64(data: bytes) -> str:
        return jwt.utils.base64url_encode(data).decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


async def test_every_forged_or_unfit_token_is_refused_with_401(world, jwks) -> None:
    api, tenant = world
    kid, private = jwks.new_key()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for name, token in _forgeries(tenant, kid, private, public_pem).items():
        response = await documents(api, token)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        assert response.json()["code"] == "unauthenticated", name


async def test_another_tenant_named_in_x_tenant_id_is_forbidden(world, jwks) -> None:
    api, tenant = world
    kid, private = jwks.new_key()
    token = es256(private, kid, supabase_claims(tenant))
    response = await documents(api, token, **{"X-Tenant-ID": "someone-else"})
    assert response.status_code == 403


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(world, jwks) -> None:
    api, tenant = world
    kid, private = jwks.new_key()
    assert (await documents(api, es256(private, kid, supabase_claims(tenant)))).status_code == 200
    fetched = jwks.fetches
    for _ in range(5):
        stray = es256(private, f"stray-{uuid.uuid4()}", supabase_claims(tenant))
        assert (await documents(api, stray)).status_code == 401
    assert jwks.fetches - fetched <= 1


async def test_a_rotated_in_key_is_picked_up_from_the_issuer(tmp_path, jwks) -> None:
    async for api, tenant in api_with(tmp_path, jwks, SBA_AUTH__JWT__JWKS_REFRESH_S="0"):
        kid, private = jwks.new_key()
        assert (
            await documents(api, es256(private, kid, supabase_claims(tenant)))
        ).status_code == 200
        new_kid, new_private = jwks.new_key()  # the project rotates its signing key
        token = es256(new_private, new_kid, supabase_claims(tenant))
        assert (await documents(api, token)).status_code == 200


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SBA_AUTH__JWT__TENANT_CLAIM": "user_metadata.tenant_id"}, "TENANT_CLAIM"),
        ({"SBA_AUTH__JWT__ROLE_CLAIM": "user_metadata.role"}, "ROLE_CLAIM"),
        ({"SBA_AUTH__JWT__ALGORITHMS": '["ES256", "HS256"]'}, "ALGORITHMS"),
    ],
)
async def test_unsafe_token_settings_stop_start_up_with_the_variable_named(
    tmp_path, env: dict[str, str], named: str
) -> None:
    settings = load_settings(
        {"SBA_DATA_DIR": str(tmp_path), "SBA_AUTH__JWT__ISSUER": ISSUER, **env}
    )
    container = make_container(settings)
    try:
        with pytest.raises(SettingsError, match=f"SBA_AUTH__JWT__{named}"):
            await container.get(Authenticate)
    finally:
        await container.close()
