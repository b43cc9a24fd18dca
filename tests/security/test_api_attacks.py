"""The first wall, through the HTTP API: tenant B, holding its own valid key, tries every tenant
endpoint on tenant A's runs, threads and documents (ids drawn by hypothesis), on SQLite and on
Postgres. Every attempt finds nothing, and A's data is exactly as it was."""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from application.errors import Conflict
from application.ports import SchemaMigrator
from application.tenancy.use_cases import CreateApiKey, CreateTenant, EnsureDemoTenant
from domain.tenancy.model import Role
from entrypoints.http.app import create_app
from entrypoints.ioc.container import make_container
from entrypoints.settings import load_settings
from tests.integration.test_http_api import Api, parse_sse, run_body
from tests.pg import _run, drop_database, fresh_database

ids = st.text(alphabet=string.ascii_letters + string.digits + "-_:~", min_size=1, max_size=40)


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request, tmp_path) -> Iterator[dict[str, str]]:
    """One database per backend, shared by the examples (each uses its own ids)."""
    env = {"SBA_LLM__LOADTEST": "true", "SBA_DATA_DIR": str(tmp_path)}
    if request.param == "sqlite":
        yield env
        return
    made: dict[str, str] = {}

    async def create() -> None:
        made["url"], made["name"] = await fresh_database(request.getfixturevalue("pg_template"))

    _run(create)
    yield {**env, "SBA_DATABASE_URL": made["url"]}
    _run(lambda: drop_database(made["name"]))


async def open_api(env: dict[str, str]) -> AsyncIterator[tuple[Api, str]]:
    """The app on ``env``'s database, with the demo tenant (A) and its admin key, and tenant
    "beta" (B) with a key of its own. Tenants and keys are made beforehand by a container of
    their own, as ``sba`` would: the app's pool belongs to the app's event loop."""
    settings = load_settings(env)
    setup = make_container(settings)
    try:
        await (await setup.get(SchemaMigrator)).upgrade()
        await (await setup.get(EnsureDemoTenant))()
        with contextlib.suppress(Conflict):
            await (await setup.get(CreateTenant))("beta", actor="test")
        keys = [
            (await (await setup.get(CreateApiKey))(slug, Role.ADMIN, actor="test")).plaintext
            for slug in ("demo", "beta")
        ]
    finally:
        await setup.close()
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        yield Api(client=client, key=keys[0], container=None), keys[1]


async def a_state(api: Api, thread: str, run: str, doc: str) -> tuple:
    """What A can see of its own thread, run and document."""
    h = api.auth()
    messages = (await api.client.get(f"/v1/threads/{quote(thread)}/messages", headers=h)).json()
    got_run = (await api.client.get(f"/v1/runs/{quote(run)}", headers=h)).json()
    document = (await api.client.get(f"/v1/kb/documents/{quote(doc)}", headers=h)).json()
    return json.dumps(messages, sort_keys=True), got_run["status"], document["content"]


@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(thread=ids, run=ids, doc=ids)
def test_a_second_tenant_finds_nothing_of_the_firsts_through_any_endpoint(
    database_env: dict[str, str], thread: str, run: str, doc: str
) -> None:
    # The database is shared by the examples: a suffix of its own keeps one example's ids
    # from meeting another's (run "A" on two different threads is a conflict, not a leak).
    tag = "." + uuid.uuid4().hex[:8]

    async def scenario() -> None:
        async for api, b_key in open_api(database_env):
            await attack(api, b_key, thread + tag, run + tag, doc + tag)

    asyncio.run(scenario())


async def attack(api: Api, b_key: str, thread: str, run: str, doc: str) -> None:
    b = api.auth(b_key)
    # A: a finished run on a thread, and a document with a word only A uses.
    answer = await api.run(run_body(run_id=run, thread_id=thread, text="Our secret plan?"))
    assert parse_sse(answer.text)[-1][1]["type"] == "RUN_FINISHED"
    put = await api.client.put(
        f"/v1/kb/documents/{quote(doc)}",
        headers=api.auth(),
        content=json.dumps({"title": "Plan", "content": "The quixotically secret plan of A."}),
    )
    assert put.status_code in (200, 201), put.text
    before = await a_state(api, thread, run, doc)

    t, r, d = quote(thread), quote(run), quote(doc)
    for method, path in (
        ("GET", f"/v1/runs/{r}"),
        ("GET", f"/v1/runs/{r}/events"),
        ("DELETE", f"/v1/runs/{r}"),
        ("GET", f"/v1/threads/{t}/messages"),
        ("GET", f"/v1/kb/documents/{d}"),
        ("DELETE", f"/v1/kb/documents/{d}"),
    ):
        response = await api.client.request(method, path, headers=b)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    listed = (await api.client.get("/v1/kb/documents", headers=b)).json()["documents"]
    assert listed == []
    found = await api.client.get("/v1/kb/search", params={"q": "quixotically"}, headers=b)
    assert found.json()["results"] == []
    # Naming A's tenant with B's key is refused outright.
    demo = await api.client.get("/v1/kb/documents", headers={**b, "X-Tenant-ID": "demo"})
    assert demo.status_code == 403
    # Writing under A's ids makes B's own rows, never touches A's.
    mine = await api.client.put(
        f"/v1/kb/documents/{d}",
        headers=b,
        content=json.dumps({"title": "B", "content": "B's own words."}),
    )
    assert mine.status_code in (200, 201)
    b_run = await api.run(run_body(run_id=run, thread_id=thread, text="And mine?"), key=b_key)
    assert parse_sse(b_run.text)[-1][1]["type"] == "RUN_FINISHED"
    b_messages = (await api.client.get(f"/v1/threads/{t}/messages", headers=b)).json()
    assert "Our secret plan?" not in json.dumps(b_messages)

    assert await a_state(api, thread, run, doc) == before
    # Clean B's rows so the next example starts from the same place.
    assert (await api.client.delete(f"/v1/kb/documents/{d}", headers=b)).status_code == 204
