"""The knowledge base over HTTP, and the offline model answering from it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from domain.tenancy.model import Role
from tests.integration.test_http_api import Api, assert_problem, make_api, parse_sse, run_body


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_KB__MAX_DOCUMENT_BYTES="2000"):
        yield a


def answer_of(frames) -> str:
    return "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")


async def test_a_question_about_the_seeded_knowledge_base_is_answered_with_citations(
    api: Api,
) -> None:
    frames = parse_sse((await api.run(run_body(text="What are the payment terms?"))).text)
    assert frames[-1][1]["type"] == "RUN_FINISHED"
    answer = answer_of(frames)
    assert "Payment terms are 30 days net" in answer
    assert "Sources:\n[1] Invoicing and payment terms (handbook/invoicing)" in answer


async def test_a_question_the_knowledge_base_cannot_answer_says_so(api: Api) -> None:
    frames = parse_sse((await api.run(run_body(text="zygomorphic flowers?"))).text)
    assert "found nothing" in answer_of(frames)


async def test_documents_can_be_added_read_searched_replaced_and_deleted(api: Api) -> None:
    h = api.auth()
    created = await api.client.post(
        "/v1/kb/documents",
        headers=h,
        content=json.dumps(
            {
                "id": "vacation",
                "title": "Vacation policy",
                "contentType": "html",
                "content": "<h1>Vacation</h1><p>Employees get 28 days of paid vacation.</p>",
                "source": "hr/vacation",
                "metadata": {"owner": "hr"},
            }
        ),
    )
    assert created.status_code == 201, created.text
    assert created.json()["chunks"] == 1
    got = (await api.client.get("/v1/kb/documents/vacation", headers=h)).json()
    assert (got["title"], got["contentType"], got["metadata"]) == (
        "Vacation policy",
        "html",
        {"owner": "hr"},
    )
    found = (
        await api.client.get("/v1/kb/search", params={"q": "paid vacation days"}, headers=h)
    ).json()["results"]
    assert found[0]["documentId"] == "vacation"
    assert found[0]["citation"] == "[1] Vacation policy (hr/vacation)"
    assert "<" not in found[0]["snippet"]
    replaced = await api.client.put(
        "/v1/kb/documents/vacation",
        headers=h,
        content=json.dumps(
            {
                "title": "Vacation policy 2027",
                "content": "Employees get 30 days off.",
            }
        ),
    )
    assert replaced.status_code == 200
    assert (await api.client.get("/v1/kb/documents/vacation", headers=h)).json()[
        "createdAtMs"
    ] == got["createdAtMs"]
    assert (await api.client.get("/v1/kb/search", params={"q": "28 paid"}, headers=h)).json()[
        "results"
    ][0]["documentId"] != "vacation"
    ids = [
        d["id"] for d in (await api.client.get("/v1/kb/documents", headers=h)).json()["documents"]
    ]
    assert "vacation" in ids and "demo-refunds" in ids
    assert (await api.client.delete("/v1/kb/documents/vacation", headers=h)).status_code == 204
    assert_problem(await api.client.get("/v1/kb/documents/vacation", headers=h), 404, "not_found")
    assert_problem(
        await api.client.delete("/v1/kb/documents/vacation", headers=h), 404, "not_found"
    )


async def test_another_tenant_sees_none_of_the_demo_documents(api: Api) -> None:
    other = await api.key_for("acme")
    assert (await api.client.get("/v1/kb/documents", headers=api.auth(other))).json() == {
        "documents": []
    }
    hits = (
        await api.client.get("/v1/kb/search", params={"q": "refund"}, headers=api.auth(other))
    ).json()["results"]
    assert hits == []
    assert_problem(
        await api.client.get("/v1/kb/documents/demo-refunds", headers=api.auth(other)),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"title": "T", "content": "x" * 3000}, 422, "invalid_input"),
        ({"title": "T", "content": "ok", "contentType": "pdf"}, 422, "invalid_input"),
        ({"title": " ", "content": "ok"}, 422, "invalid_input"),
        ({"title": "T", "content": "<p></p>", "contentType": "html"}, 422, "invalid_input"),
        ({"title": "T", "content": "ok", "colour": "red"}, 422, "validation_failed"),
        ({"content": "ok"}, 422, "validation_failed"),
    ],
)
async def test_invalid_documents_are_refused_clearly(api: Api, body, status, code) -> None:
    response = await api.client.post(
        "/v1/kb/documents", headers=api.auth(), content=json.dumps(body)
    )
    assert_problem(response, status, code)


async def test_read_only_keys_may_search_but_not_change_the_knowledge_base(api: Api) -> None:
    key = await api.key_for("demo", Role.READONLY)
    h = api.auth(key)
    assert (await api.client.get("/v1/kb/search", params={"q": "refund"}, headers=h)).json()[
        "results"
    ]
    response = await api.client.post(
        "/v1/kb/documents", headers=h, content=json.dumps({"title": "T", "content": "x"})
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(
        await api.client.delete("/v1/kb/documents/demo-refunds", headers=h), 403, "forbidden"
    )


async def test_an_empty_or_oversized_query_is_refused(api: Api) -> None:
    h = api.auth()
    assert_problem(
        await api.client.get("/v1/kb/search", params={"q": " "}, headers=h), 422, "invalid_input"
    )
    assert_problem(
        await api.client.get("/v1/kb/search", params={"q": "x" * 501}, headers=h),
        422,
        "invalid_input",
    )
    missing = await api.client.get("/v1/kb/search", headers=h)
    assert_problem(missing, 422, "validation_failed")


async def test_with_embeddings_configured_search_finds_meaning_and_survives_an_outage(
    tmp_path,
) -> None:
    from tests.integration.test_http_api import make_api
    from tests.llm.fake_embeddings import ThreadedEmbeddings

    with ThreadedEmbeddings() as provider:
        env = {
            "SBA_KB__EMBEDDINGS__BASE_URL": provider.base_url,
            "SBA_KB__EMBEDDINGS__MODEL": "concepts-1",
            "SBA_KB__EMBEDDINGS__API_KEY": "sk-embeddings-test-key",
        }
        # own_setup: the app's embeddings client lives on the app's loop, not the test's.
        async for api in make_api(tmp_path, own_setup=True, **env):
            h = api.auth()
            body = {
                "id": "time-off",
                "title": "Time off",
                "content": "Every employee gets 28 days of vacation a year.",
            }
            created = await api.client.post("/v1/kb/documents", headers=h, json=body)
            assert created.status_code == 201, created.text
            embedded = [t for batch in provider.inputs for t in batch]
            assert any("28 days of vacation" in t for t in embedded)

            # No document says "holiday": only the embedding can find the vacation rule.
            found = await api.client.get("/v1/kb/search", params={"q": "holiday"}, headers=h)
            assert found.status_code == 200
            assert found.json()["results"][0]["documentId"] == "time-off"

            provider.down = True
            lexical = await api.client.get(
                "/v1/kb/search", params={"q": "vacation policy"}, headers=h
            )
            assert lexical.status_code == 200
            assert lexical.json()["results"][0]["documentId"] == "time-off"
            nothing = await api.client.get("/v1/kb/search", params={"q": "holidays"}, headers=h)
            assert nothing.status_code == 200 and nothing.json()["results"] == []


async def test_the_document_list_pages_with_a_cursor(api: Api) -> None:
    h = api.auth()
    for n in range(7):
        doc = {"title": f"Paged {n}", "content": f"Page text {n}."}
        assert (await api.client.post("/v1/kb/documents", json=doc, headers=h)).status_code == 201
    whole = (await api.client.get("/v1/kb/documents?limit=500", headers=h)).json()
    assert "nextCursor" not in whole
    ids, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.client.get(f"/v1/kb/documents{query}", headers=h)).json()
        assert len(page["documents"]) <= 3
        ids += [d["id"] for d in page["documents"]]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert ids == [d["id"] for d in whole["documents"]] and len(ids) >= 7
    bad = await api.client.get("/v1/kb/documents?cursor=not-a-cursor", headers=h)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    assert (await api.client.get("/v1/kb/documents?limit=0", headers=h)).status_code == 422
