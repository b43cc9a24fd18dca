"""Idempotency-Key over HTTP, on memory and on Redis: a retried change happens once and gets
the first answer back; a reused key with another request is a 422; one still running, a 409."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from application.ports import ClaimOutcome, IdempotencyStore
from application.tenancy.use_cases import Authenticate
from entrypoints.http.idempotency import fingerprint
from tests.integration.test_http_api import Api, assert_problem, parse_sse, run_body
from tests.integration.test_rate_limits_api import limited_api

KINDS = ["memory", "redis"]


@pytest.fixture(params=KINDS)
async def api(request, tmp_path) -> AsyncIterator[Api]:
    async for a in limited_api(tmp_path, request.param):
        yield a


def doc(title: str = "Refunds", doc_id: str | None = None) -> str:
    body = {"title": title, "content": "Refunds take 5 days.", "contentType": "markdown"}
    if doc_id:
        body["id"] = doc_id
    return json.dumps(body)


async def post_doc(api: Api, key, content: str, auth: str | None = None):
    headers = {**api.auth(auth), "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await api.client.post("/v1/kb/documents", headers=headers, content=content)


async def documents(api: Api) -> list[str]:
    listed = (await api.client.get("/v1/kb/documents", headers=api.auth())).json()
    return [d["title"] for d in listed["documents"]]


async def test_a_retried_create_happens_once_and_replays_the_first_answer(api: Api) -> None:
    before = await documents(api)
    first = await post_doc(api, "create-refunds-1", doc())
    assert first.status_code == 201
    again = await post_doc(api, "create-refunds-1", doc())
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["content-type"] == first.headers["content-type"]
    assert (await documents(api)).count("Refunds") == 1
    assert len(await documents(api)) == len(before) + 1


async def test_without_a_key_each_request_is_its_own(api: Api) -> None:
    await post_doc(api, None, doc())
    await post_doc(api, None, doc())
    assert (await documents(api)).count("Refunds") == 2


async def test_the_same_key_with_a_different_request_is_a_422(api: Api) -> None:
    assert (await post_doc(api, "k-1", doc("Refunds"))).status_code == 201
    assert_problem(await post_doc(api, "k-1", doc("Returns")), 422, "idempotency_key_reused")
    assert "Returns" not in await documents(api)


async def test_the_same_request_while_the_first_runs_is_a_409(api: Api) -> None:
    # The first request holds the key (as it would mid-flight on another instance).
    store = await api.container.get(IdempotencyStore)
    principal_scope = await _scope_of(api)
    content = doc()
    fp = fingerprint("POST", "/v1/kb/documents", b"", "application/json", content.encode())
    await store.claim(principal_scope, "k-busy", fp, lock_s=60)
    busy = await post_doc(api, "k-busy", content)
    assert_problem(busy, 409, "idempotency_in_flight")
    assert "Refunds" not in await documents(api)


async def test_keys_belong_to_the_principal_that_sent_them(api: Api) -> None:
    other = await api.key_for("demo")
    assert (await post_doc(api, "shared", doc())).status_code == 201
    theirs = await post_doc(api, "shared", doc(), auth=other)
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert (await documents(api)).count("Refunds") == 2


async def test_a_refused_request_keeps_no_outcome_and_may_be_retried(api: Api) -> None:
    reader = await api.key_for(
        "demo", role=__import__("domain.tenancy.model").tenancy.model.Role.READONLY
    )
    assert_problem(await post_doc(api, "k-ro", doc(), auth=reader), 403, "forbidden")
    bad = await post_doc(api, "k-bad", '{"title": "x"}')
    assert bad.status_code == 422  # a validation failure is an outcome: it replays
    assert (await post_doc(api, "k-bad", '{"title": "x"}')).headers["idempotent-replayed"] == "true"


async def test_a_delete_replays_instead_of_failing_the_second_time(api: Api) -> None:
    assert (await post_doc(api, None, doc(doc_id="gone"))).status_code == 201
    headers = {**api.auth(), "Idempotency-Key": "del-1"}
    first = await api.client.delete("/v1/kb/documents/gone", headers=headers)
    again = await api.client.delete("/v1/kb/documents/gone", headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    plain = await api.client.delete("/v1/kb/documents/gone", headers=api.auth())
    assert plain.status_code == 404


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve".encode(), "tab\there"])
async def test_a_malformed_key_is_refused(api: Api, key) -> None:
    assert_problem(await post_doc(api, key, doc()), 422, "invalid_idempotency_key")


async def test_a_run_start_ignores_the_header_and_keeps_run_id_semantics(api: Api) -> None:
    headers = {"Idempotency-Key": "run-key"}
    first = await api.run(run_body("r1"), **headers)
    second = await api.run(run_body("r2"), **headers)
    assert parse_sse(first.text)[0][1]["runId"] == "r1"
    assert parse_sse(second.text)[0][1]["runId"] == "r2"


async def _scope_of(api: Api) -> str:
    principal = await (await api.container.get(Authenticate))(api.key, None)
    return f"{principal.tenant_id}:{principal.subject}"


async def test_the_answer_is_stored_before_the_client_receives_it(api: Api) -> None:
    """A retry sent the moment the first answer arrives must replay it, not meet the key still
    in flight: at the first answer's last byte, the key already replays."""
    app = api.client.app
    owner = await _scope_of(api)
    content = doc("Stored first")
    fp = fingerprint("POST", "/v1/kb/documents", b"", "application/json", content.encode())
    seen: list[ClaimOutcome] = []
    inner = app.asgi_handler

    async def watching(scope, receive, send):
        async def watched(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # The app's own store, on the app's loop: what a retry would ask.
                store = await app.state.dishka_container.get(IdempotencyStore)
                seen.append((await store.claim(owner, "k-now", fp, lock_s=60)).outcome)
            await send(message)

        await inner(scope, receive, watched)

    app.asgi_handler = watching
    try:
        first = await post_doc(api, "k-now", content)
    finally:
        app.asgi_handler = inner
    assert first.status_code == 201
    assert seen == [ClaimOutcome.REPLAY]
    again = await post_doc(api, "k-now", content)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
