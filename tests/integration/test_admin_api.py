"""The operator's admin API: off without a token, refused with a wrong one; tenants created on
a plan with tool and model lists that the running API then holds them to (rate limits, the
tool list, the model chain); suspension and key revocation effective at once, with the
default credential cache; every change on the tenant's audit trail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from application.audit.use_cases import AuditTrails
from application.ports import UnitOfWork
from domain.tenancy.model import Role
from tests.integration.test_http_api import Api, make_api, parse_sse, run_body, types

TOKEN = "admin-" + "x" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ENV = {
    "SBA_AUTH__ADMIN_TOKEN": TOKEN,
    "SBA_LLM__LOADTEST": "true",
    "SBA_RATE_LIMIT__BURST_RATIO": "0.4",
    "SBA_RATE_LIMIT__PLANS": json.dumps({"trial": {"per_minute": 5}}),
}


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, **ENV):
        yield a


def assert_problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    if code is not None:
        assert body["code"] == code
    return body


async def new_key(api: Api, slug: str, **body) -> dict:
    made = await api.client.post(f"/admin/v1/tenants/{slug}/keys", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    return made.json()


async def test_the_admin_api_is_off_without_a_token(tmp_path) -> None:
    async for api in make_api(tmp_path):
        assert_problem(await api.client.get("/admin/v1/tenants", headers=ADMIN), 404)
        schema = (await api.client.get("/schema/openapi.json")).json()
        assert not any(p.startswith("/admin") for p in schema["paths"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"bearer  {TOKEN}"},
    ],
)
async def test_anything_but_the_admin_token_is_a_401_problem(api: Api, headers) -> None:
    assert_problem(await api.client.get("/admin/v1/tenants", headers=headers), 401)
    created = await api.client.post("/admin/v1/tenants", json={"slug": "x"}, headers=headers)
    assert_problem(created, 401)


async def test_a_tenant_admin_key_is_not_an_operator(api: Api) -> None:
    tenant_admin = await api.key_for("acme", Role.ADMIN)
    response = await api.client.get("/admin/v1/tenants", headers=api.auth(tenant_admin))
    assert_problem(response, 401)


async def test_a_tenant_is_created_on_a_plan_and_held_to_its_rate_limit(api: Api) -> None:
    made = await api.client.post(
        "/admin/v1/tenants",
        json={"slug": "acme", "name": "Acme", "plan": "trial", "tools": ["kb_search"]},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    tenant = made.json()
    assert tenant["profile"] == {"plan": "trial", "tools": ["kb_search"], "models": None}
    key = (await new_key(api, "acme"))["key"]

    statuses = [
        (await api.client.get("/v1/runs/none", headers=api.auth(key))).status_code for _ in range(3)
    ]
    assert statuses == [404, 404, 429]  # the trial plan's 5/min with a 40 % burst
    tools = (await api.client.get("/v1/tools", headers=api.auth(api.key))).json()
    assert len(tools["tools"]) > 1  # the demo tenant keeps the deployment's list

    # Back on the default plan: the limit is the deployment's again.
    patched = await api.client.patch("/admin/v1/tenants/acme", json={"plan": None}, headers=ADMIN)
    assert patched.status_code == 200 and patched.json()["profile"]["plan"] is None
    again = await api.client.get("/v1/runs/none", headers=api.auth(key))
    assert again.status_code == 404
    assert "q=600" in again.headers["ratelimit-policy"]


async def test_the_tool_list_limits_what_the_agent_offers(api: Api) -> None:
    await api.key_for("acme")
    patched = await api.client.patch(
        "/admin/v1/tenants/acme", json={"tools": ["kb_search"]}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    key = (await new_key(api, "acme"))["key"]
    listed = (await api.client.get("/v1/tools", headers=api.auth(key))).json()
    assert [t["name"] for t in listed["tools"]] == ["kb_search"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"plan": "gold"}, "gold"),
        ({"tools": ["kb_search", "rm_rf"]}, "rm_rf"),
        ({"models": ["gpt-9"]}, "gpt-9"),
        ({"models": []}, "at least one model"),
        ({"status": "deleted"}, "status"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_unknown_names_are_422_problems_and_change_nothing(api: Api, body, named) -> None:
    await api.key_for("acme")
    response = await api.client.patch("/admin/v1/tenants/acme", json=body, headers=ADMIN)
    assert named in assert_problem(response, 422)["detail"]
    shown = (await api.client.get("/admin/v1/tenants/acme", headers=ADMIN)).json()
    assert shown["tenant"]["profile"] == {"plan": None, "tools": None, "models": None}
    assert shown["tenant"]["status"] == "active"
    created = await api.client.post(
        "/admin/v1/tenants", json={"slug": "globex", **body}, headers=ADMIN
    )
    assert created.status_code == 422
    assert_problem(await api.client.get("/admin/v1/tenants/globex", headers=ADMIN), 404)


async def test_suspension_and_revocation_hold_at_once_despite_the_credential_cache(
    api: Api,
) -> None:
    first = await new_key(api, "demo")
    second = await new_key(api, "demo", role="readonly", scopes=["kb:read"])
    assert second["scopes"] == ["kb:read"] and second["role"] == "readonly"
    key, other = first["key"], second["key"]
    ok = await api.run(run_body("r1", "t1"), key)
    assert types(parse_sse(ok.text))[-1] == "RUN_FINISHED"

    suspended = await api.client.patch(
        "/admin/v1/tenants/demo", json={"status": "suspended"}, headers=ADMIN
    )
    assert suspended.json()["status"] == "suspended"
    assert_problem(await api.run(run_body("r2", "t2"), key), 403, "forbidden")
    assert_problem(await api.client.get("/v1/kb/documents", headers=api.auth(other)), 403)

    await api.client.patch("/admin/v1/tenants/demo", json={"status": "active"}, headers=ADMIN)
    assert (await api.run(run_body("r3", "t3"), key)).status_code == 200

    revoked = await api.client.delete(f"/admin/v1/tenants/demo/keys/{first['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    assert_problem(await api.run(run_body("r4", "t4"), key), 401, "unauthenticated")
    assert (await api.client.get("/v1/kb/documents", headers=api.auth(other))).status_code == 200

    shown = (await api.client.get("/admin/v1/tenants/demo", headers=ADMIN)).json()
    by_id = {k["id"]: k for k in shown["keys"]}
    assert by_id[first["id"]]["revoked"] and "key" not in by_id[first["id"]]
    assert all("secret" not in json.dumps(k) for k in shown["keys"])


async def test_a_bad_key_request_is_a_422_problem(api: Api) -> None:
    for body in ({"scopes": ["everything"]}, {"scopes": []}, {"expiresInDays": -1}):
        response = await api.client.post("/admin/v1/tenants/demo/keys", json=body, headers=ADMIN)
        assert_problem(response, 422)
    response = await api.client.post("/admin/v1/tenants/nobody/keys", json={}, headers=ADMIN)
    assert_problem(response, 404)


async def test_profile_changes_are_on_the_tenants_audit_trail(api: Api) -> None:
    await api.client.patch(
        "/admin/v1/tenants/demo", json={"plan": "trial", "tools": ["kb_search"]}, headers=ADMIN
    )
    trails = AuditTrails(await api.container.get(UnitOfWork))
    [tenant] = await trails.tenants(actor="test", slug="demo")
    assert (await trails.verify(tenant)).broken is None
    trail = [e async for e in trails.entries(tenant)]
    changed = [e for e in trail if e.action == "tenant.profile.changed"]
    assert [(e.actor, e.details["plan"], e.details["tools"]) for e in changed] == [
        ("admin:api", "trial", "kb_search")
    ]


async def test_the_model_list_keeps_a_tenant_to_those_models_of_the_chain(tmp_path) -> None:
    chain = [{"name": "alpha", "kind": "offline"}, {"name": "beta", "kind": "offline"}]
    async for api in make_api(
        tmp_path, SBA_AUTH__ADMIN_TOKEN=TOKEN, SBA_LLM__CHAIN=json.dumps(chain)
    ):

        async def model_of(run_id: str, api: Api = api) -> str:
            await api.run(run_body(run_id, f"t-{run_id}"))
            run = await api.client.get(f"/v1/runs/{run_id}", headers=api.auth())
            return run.json()["model"]

        assert await model_of("r1") == "alpha"
        patched = await api.client.patch(
            "/admin/v1/tenants/demo", json={"models": ["beta"]}, headers=ADMIN
        )
        assert patched.json()["profile"]["models"] == ["beta"]
        assert await model_of("r2") == "beta"
        await api.client.patch("/admin/v1/tenants/demo", json={"models": None}, headers=ADMIN)
        assert await model_of("r3") == "alpha"
        unknown = await api.client.patch(
            "/admin/v1/tenants/demo", json={"models": ["offline"]}, headers=ADMIN
        )
        assert "alpha, beta" in assert_problem(unknown, 422)["detail"]


async def test_a_read_only_key_with_a_writing_scope_is_a_422(api: Api) -> None:
    body = {"role": "readonly", "scopes": ["kb:write"]}
    made = await api.client.post("/admin/v1/tenants/demo/keys", json=body, headers=ADMIN)
    assert "kb:write" in assert_problem(made, 422)["detail"]
