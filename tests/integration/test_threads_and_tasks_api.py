"""Threads and tasks over HTTP: listed a page at a time, read, renamed, completed, reassigned
and deleted; another tenant sees none of it (404), and each key does only what its scopes
allow."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from application.tenancy.use_cases import CreateApiKey
from domain.tenancy.model import Role, Scope
from tests.audit_support import tenant_trail
from tests.integration.test_http_api import Api, assert_problem, make_api, run_body


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path):
        yield a


async def scoped_key(api: Api, *scopes: Scope, role: Role = Role.MEMBER) -> str:
    create = await api.container.get(CreateApiKey)
    return (await create("demo", role, actor="test", scopes=frozenset(scopes))).plaintext


async def ask(api: Api, thread: str, text: str, n: int = 0, key: str | None = None) -> None:
    response = await api.run(run_body(run_id=f"{thread}-r{n}", thread_id=thread, text=text), key)
    assert response.status_code == 200 and "RUN_FINISHED" in response.text, response.text


async def create_task(api: Api, thread: str, **arguments: str) -> str:
    response = await api.run(
        run_body(
            run_id=f"{thread}-task",
            thread_id=thread,
            text=f"/tool create_task {json.dumps(arguments)}",
        )
    )
    assert '"taskId' in response.text or "taskId" in response.text, response.text
    tasks = (await api.client.get("/v1/tasks", headers=api.auth())).json()["tasks"]
    return next(t["id"] for t in tasks if t["title"] == arguments["title"])


async def test_threads_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    for n in range(3):
        await ask(api, f"t{n}", f"Question number {n} about refunds")
    await ask(api, "t0", "and a follow-up", n=1)
    first = await api.client.get("/v1/threads?limit=2", headers=api.auth())
    assert first.status_code == 200
    body = first.json()
    assert [t["id"] for t in body["threads"]] == ["t2", "t1"]
    t2 = body["threads"][0]
    assert t2["title"] == "Question number 2 about refunds" and t2["named"] is False
    assert t2["runCount"] == 1 and t2["lastActivityAtMs"] >= t2["createdAtMs"]
    rest = await api.client.get(
        "/v1/threads", params={"limit": 2, "cursor": body["nextCursor"]}, headers=api.auth()
    )
    [t0] = rest.json()["threads"]
    assert (t0["id"], t0["runCount"]) == ("t0", 2) and "nextCursor" not in rest.json()
    one = await api.client.get("/v1/threads/t0", headers=api.auth())
    assert one.json() == t0


async def test_a_thread_is_renamed_and_deleted_with_its_runs_on_the_audit_trail(
    api: Api,
) -> None:
    await ask(api, "t1", "How do refunds work?")
    renamed = await api.client.patch(
        "/v1/threads/t1", json={"title": "  Refund policy "}, headers=api.auth()
    )
    assert renamed.status_code == 200
    assert (renamed.json()["title"], renamed.json()["named"]) == ("Refund policy", True)
    cleared = await api.client.patch("/v1/threads/t1", json={"title": None}, headers=api.auth())
    assert cleared.json()["title"] == "How do refunds work?"
    deleted = await api.client.delete("/v1/threads/t1", headers=api.auth())
    assert deleted.status_code == 204
    for path in ("/v1/threads/t1", "/v1/threads/t1/messages", "/v1/runs/t1-r0"):
        assert_problem(await api.client.get(path, headers=api.auth()), 404, "not_found")
    assert_problem(await api.client.delete("/v1/threads/t1", headers=api.auth()), 404, "not_found")
    usage = (await api.client.get("/v1/usage", headers=api.auth())).json()
    assert usage["total"]["runs"] == 1 and usage["total"]["totalTokens"] > 0
    trail = [e for e in await tenant_trail(api.container, "demo") if e.subject == "t1"]
    assert [e.action for e in trail] == ["thread.renamed", "thread.renamed", "thread.deleted"]
    assert trail[-1].actor.startswith("apikey:") and trail[-1].details["runs"] == "1"


async def test_bad_thread_requests_are_problems(api: Api) -> None:
    await ask(api, "t1", "hello")
    h = api.auth()
    assert_problem(
        await api.client.get("/v1/threads?cursor=nonsense", headers=h), 400, "invalid_cursor"
    )
    assert_problem(await api.client.get("/v1/threads?limit=0", headers=h), 422, "validation_failed")
    for body in ({"title": ""}, {"title": "x" * 201}, {}, {"title": "ok", "extra": 1}):
        response = await api.client.patch("/v1/threads/t1", json=body, headers=h)
        assert_problem(response, 422, "validation_failed")
    nul = await api.client.patch("/v1/threads/t1", json={"title": "a\u0000b"}, headers=h)
    assert_problem(nul, 422, "validation_failed")


async def test_tasks_the_agent_created_are_filtered_completed_reassigned_and_deleted(
    api: Api,
) -> None:
    h = api.auth()
    call = await create_task(api, "t1", title="Call Ana", due="2026-03-01")
    mail = await create_task(api, "t2", title="Mail the invoice")
    listed = (await api.client.get("/v1/tasks", headers=h)).json()["tasks"]
    assert [t["id"] for t in listed] == [mail, call]
    assert listed[1]["createdBy"].startswith("apikey:") and listed[1]["assignee"] is None
    done = await api.client.patch(f"/v1/tasks/{call}", json={"status": "done"}, headers=h)
    assert done.status_code == 200 and done.json()["status"] == "done"
    handed = await api.client.patch(
        f"/v1/tasks/{mail}", json={"assignee": "bo", "due": "2026-02-01"}, headers=h
    )
    assert (handed.json()["assignee"], handed.json()["due"]) == ("bo", "2026-02-01")

    async def ids(query: str) -> list[str]:
        response = await api.client.get(f"/v1/tasks?{query}", headers=h)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["tasks"]]

    assert await ids("status=done") == [call]
    assert await ids("status=open&assignee=bo") == [mail]
    assert await ids("dueFrom=2026-02-15") == [call]
    assert await ids("dueTo=2026-02-15") == [mail]
    assert await ids("limit=1") == [mail]
    assert_problem(
        await api.client.get("/v1/tasks?status=later", headers=h), 422, "validation_failed"
    )
    assert_problem(
        await api.client.get("/v1/tasks?dueFrom=soon", headers=h), 422, "validation_failed"
    )
    cleared = await api.client.patch(f"/v1/tasks/{mail}", json={"assignee": None}, headers=h)
    assert cleared.json()["assignee"] is None
    for body in ({"status": "finished"}, {"due": "31/12/2026"}, {"title": ""}, {"owner": "x"}):
        bad = await api.client.patch(f"/v1/tasks/{mail}", json=body, headers=h)
        assert_problem(bad, 422, "validation_failed")
    assert (await api.client.delete(f"/v1/tasks/{call}", headers=h)).status_code == 204
    assert_problem(await api.client.get(f"/v1/tasks/{call}", headers=h), 404, "not_found")
    trail = [e.action for e in await tenant_trail(api.container, "demo") if e.subject == call]
    assert trail == ["task.created", "task.updated", "task.deleted"]


async def test_another_tenant_gets_404_for_threads_and_tasks_it_does_not_own(api: Api) -> None:
    await ask(api, "t1", "Something private")
    task = await create_task(api, "t2", title="Private task")
    other = api.auth(await api.key_for("acme", Role.ADMIN))
    assert (await api.client.get("/v1/threads", headers=other)).json() == {"threads": []}
    assert (await api.client.get("/v1/tasks", headers=other)).json() == {"tasks": []}
    for method, path, body in (
        ("GET", "/v1/threads/t1", None),
        ("PATCH", "/v1/threads/t1", {"title": "mine now"}),
        ("DELETE", "/v1/threads/t1", None),
        ("GET", f"/v1/tasks/{task}", None),
        ("PATCH", f"/v1/tasks/{task}", {"status": "done"}),
        ("DELETE", f"/v1/tasks/{task}", None),
    ):
        response = await api.client.request(method, path, json=body, headers=other)
        assert_problem(response, 404, "not_found")
    mine = (await api.client.get("/v1/threads/t1", headers=api.auth())).json()
    assert mine["title"] == "Something private"
    theirs = (await api.client.get(f"/v1/tasks/{task}", headers=api.auth())).json()
    assert theirs["status"] == "open"


async def test_each_key_does_only_what_its_scopes_allow(api: Api) -> None:
    await ask(api, "t1", "hello")
    task = await create_task(api, "t2", title="Scoped task")

    def refused(response, scope: str | None = None) -> None:
        code = "insufficient_scope" if scope else "forbidden"
        body = assert_problem(response, 403, code)
        assert scope is None or scope in body["detail"]

    widget = api.auth(await scoped_key(api, Scope.RUNS))
    refused(await api.client.get("/v1/threads", headers=widget), "threads:read")
    refused(await api.client.get("/v1/tasks", headers=widget), "tasks:read")
    # A thread named by id stays readable with runs alone, as before.
    assert (await api.client.get("/v1/threads/t1/messages", headers=widget)).status_code == 200

    reader = api.auth(await scoped_key(api, Scope.THREADS_READ, Scope.TASKS_READ))
    assert (await api.client.get("/v1/threads", headers=reader)).status_code == 200
    assert (await api.client.get(f"/v1/tasks/{task}", headers=reader)).status_code == 200
    refused(
        await api.client.patch("/v1/threads/t1", json={"title": "x"}, headers=reader),
        "threads:write",
    )
    refused(await api.client.delete("/v1/threads/t1", headers=reader), "threads:write")
    refused(
        await api.client.patch(f"/v1/tasks/{task}", json={"status": "done"}, headers=reader),
        "tasks:write",
    )
    refused(await api.client.delete(f"/v1/tasks/{task}", headers=reader), "tasks:write")

    read_only = api.auth(await scoped_key(api, Scope.THREADS_READ, role=Role.READONLY))
    assert (await api.client.get("/v1/threads", headers=read_only)).status_code == 200
    unscoped_read_only = api.auth(await api.key_for("demo", Role.READONLY))
    refused(await api.client.delete("/v1/threads/t1", headers=unscoped_read_only))
    refused(await api.client.delete(f"/v1/tasks/{task}", headers=unscoped_read_only))

    writer = api.auth(await scoped_key(api, Scope.THREADS_WRITE, Scope.TASKS_WRITE))
    assert (await api.client.delete(f"/v1/tasks/{task}", headers=writer)).status_code == 204
    assert (await api.client.delete("/v1/threads/t1", headers=writer)).status_code == 204


async def test_the_resources_and_their_bodies_are_in_the_openapi_document(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    components = schema["components"]["schemas"]

    def body_of(content: dict) -> dict:
        ref = content["application/json"]["schema"]["$ref"]
        return components[ref.rsplit("/", 1)[-1]]

    assert {"get"} <= set(paths["/v1/threads"]) and {"get"} <= set(paths["/v1/tasks"])
    assert {"get", "patch", "delete"} <= set(paths["/v1/threads/{thread_id}"])
    assert {"get", "patch", "delete"} <= set(paths["/v1/tasks/{task_id}"])
    patch_task = paths["/v1/tasks/{task_id}"]["patch"]["requestBody"]["content"]
    properties = body_of(patch_task)["properties"]
    assert {"status", "assignee", "due", "title", "notes"} == set(properties)
    patch_thread = paths["/v1/threads/{thread_id}"]["patch"]["requestBody"]["content"]
    assert "title" in body_of(patch_thread)["properties"]
    listing = paths["/v1/tasks"]["get"]
    assert {"status", "assignee", "dueFrom", "dueTo", "limit", "cursor"} <= {
        p["name"] for p in listing["parameters"]
    }
    assert {"ThreadOut", "ThreadsOut", "TaskOut", "TasksOut"} <= set(components)
