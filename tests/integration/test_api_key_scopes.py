"""API-key scopes: a key does only the work its scopes name, on top of what its role allows,
and the use cases check it themselves (a caller that is not the HTTP edge is held alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from application.conversation.use_cases import StartRun, StartRunCommand
from application.errors import Forbidden, InvalidInput
from application.knowledge.use_cases import SearchKnowledge
from application.tenancy.use_cases import Authenticate, CreateApiKey
from domain.conversation.model import Message
from domain.conversation.model import Role as MessageRole
from domain.ids import MessageId
from domain.tenancy.model import Role, Scope
from tests.integration.test_http_api import Api, make_api, run_body


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_LLM__LOADTEST="true"):
        yield a


async def scoped_key(api: Api, *scopes: Scope, role: Role = Role.MEMBER) -> str:
    create = await api.container.get(CreateApiKey)
    issued = await create("demo", role, actor="test", scopes=frozenset(scopes))
    return issued.plaintext


def assert_refused(response, code: str = "insufficient_scope") -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_a_runs_only_key_runs_the_agent_and_nothing_else(api: Api) -> None:
    key = await scoped_key(api, Scope.RUNS)
    h = api.auth(key)
    started = await api.run(run_body(), key)
    assert started.status_code == 200 and "RUN_FINISHED" in started.text
    assert (await api.client.get("/v1/runs/r1", headers=h)).status_code == 200
    assert (await api.client.get("/v1/tools", headers=h)).status_code == 200
    assert_refused(await api.client.get("/v1/kb/documents", headers=h))
    assert_refused(await api.client.get("/v1/kb/search?q=refund", headers=h))
    assert_refused(await api.client.get("/v1/usage", headers=h))
    assert_refused(
        await api.client.post("/v1/renders", json={"template": "inline:x", "data": {}}, headers=h)
    )
    refused = await api.client.delete("/v1/kb/documents/demo-refunds", headers=h)
    assert_refused(refused)
    assert "kb:write" in refused.json()["detail"]
    # Refused means not done: the document is still there for a key that may read it.
    everything = await api.client.get("/v1/kb/documents/demo-refunds", headers=api.auth())
    assert everything.status_code == 200


async def test_a_reading_key_reads_the_knowledge_base_but_cannot_change_it_or_run(
    api: Api,
) -> None:
    h = api.auth(await scoped_key(api, Scope.KB_READ, Scope.USAGE_READ))
    assert (await api.client.get("/v1/kb/documents", headers=h)).status_code == 200
    assert (await api.client.get("/v1/kb/search?q=refund", headers=h)).status_code == 200
    assert (await api.client.get("/v1/usage", headers=h)).status_code == 200
    doc = {"title": "T", "content": "x"}
    assert_refused(await api.client.post("/v1/kb/documents", json=doc, headers=h))
    assert_refused(await api.run(run_body(), h["Authorization"].split()[1]))


async def test_a_scope_does_not_lift_a_read_only_role(api: Api) -> None:
    key = await scoped_key(api, Scope.RENDERS, Scope.RUNS, role=Role.READONLY)
    render = {"template": "inline:# Hello", "formats": ["markdown"]}
    response = await api.client.post("/v1/renders", json=render, headers=api.auth(key))
    assert_refused(response, "forbidden")
    assert_refused(await api.run(run_body(), key), "forbidden")


async def test_a_read_only_key_is_not_minted_with_a_scope_it_could_never_use(api: Api) -> None:
    create = await api.container.get(CreateApiKey)
    with pytest.raises(InvalidInput, match="kb:write"):
        await create("demo", Role.READONLY, actor="test", scopes=frozenset({Scope.KB_WRITE}))
    with pytest.raises(InvalidInput, match="kb:write"):
        scopes = frozenset({Scope.KB_READ, Scope.KB_WRITE})
        await create("demo", Role.READONLY, actor="test", scopes=scopes)
    # What a read-only key can use is still minted.
    assert await scoped_key(api, Scope.KB_READ, Scope.RUNS, role=Role.READONLY)


async def test_the_use_cases_hold_scopes_without_the_http_edge(api: Api) -> None:
    key = await scoped_key(api, Scope.KB_READ)
    principal = await (await api.container.get(Authenticate))(key)
    assert principal.scopes == {Scope.KB_READ}
    hits = await (await api.container.get(SearchKnowledge))(principal, "refund")
    assert hits
    start = await api.container.get(StartRun)
    command = StartRunCommand(
        principal=principal,
        agent="assistant",
        thread_id="t-scoped",
        run_id="r-scoped",
        messages=(Message(id=MessageId("m1"), role=MessageRole.USER, content="hi"),),
        forwarded_props={},
    )
    with pytest.raises(Forbidden) as refused:
        await start(command)
    assert refused.value.code == "insufficient_scope"


async def test_a_key_with_an_empty_scope_set_is_not_minted(api: Api) -> None:
    create = await api.container.get(CreateApiKey)
    with pytest.raises(InvalidInput):
        await create("demo", Role.MEMBER, actor="test", scopes=frozenset())
