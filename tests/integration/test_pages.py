"""The chat and first-start pages as the server ships them: files from the package, a policy
that lets them run their own scripts and nothing else, revalidation by ETag; and the starter
templates a new workspace may load."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from application.tenancy.use_cases import CreateApiKey
from domain.tenancy.model import Role, Scope
from tests.integration.test_http_api import Api, assert_problem, make_api


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path):
        yield a


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "text/html"),
        ("/welcome", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/agui.js", "text/javascript"),
        ("/ui/markdown.js", "text/javascript"),
        ("/ui/welcome.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ],
)
async def test_the_pages_and_their_files_are_served_under_a_policy_of_their_own(
    api: Api, path: str, kind: str
) -> None:
    response = await api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert "unsafe" not in policy and "http" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    again = await api.client.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_the_pages_reference_only_their_own_files(api: Api) -> None:
    for path in ("/", "/welcome"):
        html = (await api.client.get(path)).text
        assert "<script>" not in html and " style=" not in html and "http" not in html
        assert '<script type="module" src="/ui/' in html


async def test_an_unknown_file_is_a_404_and_the_api_keeps_its_strict_policy(api: Api) -> None:
    assert_problem(await api.client.get("/ui/nope.js"), 404, "not_found")
    assert_problem(await api.client.get("/ui/..%2Fui.py"), 404, "not_found")
    policy = (await api.client.get("/healthz")).headers["content-security-policy"]
    assert policy.startswith("default-src 'none'") and "script-src" not in policy


async def test_starter_templates_are_listed_and_loaded_into_the_knowledge_base(api: Api) -> None:
    listed = (await api.client.get("/v1/kb/templates", headers=api.auth())).json()["templates"]
    assert {t["name"] for t in listed} == {"support-desk", "invoicing"}
    invoicing = next(t for t in listed if t["name"] == "invoicing")
    assert invoicing["title"] == "Invoicing assistant" and invoicing["description"]
    loaded = await api.client.post("/v1/kb/templates/invoicing", headers=api.auth())
    assert loaded.status_code == 200
    ids = {d["id"] for d in loaded.json()["documents"]}
    assert "invoicing-invoice-template" in ids
    # Loading again replaces the same documents instead of adding copies.
    await api.client.post("/v1/kb/templates/invoicing", headers=api.auth())
    documents = (await api.client.get("/v1/kb/documents", headers=api.auth())).json()
    assert sum(d["id"].startswith("invoicing-") for d in documents["documents"]) == len(ids)
    hits = (await api.client.get("/v1/kb/search?q=reminder late fee", headers=api.auth())).json()
    assert hits["results"][0]["documentId"].startswith("invoicing-")
    assert_problem(
        await api.client.post("/v1/kb/templates/nope", headers=api.auth()), 404, "not_found"
    )


async def test_loading_a_template_needs_kb_write(api: Api) -> None:
    create = await api.container.get(CreateApiKey)
    key = await create("demo", Role.MEMBER, actor="test", scopes=frozenset({Scope.KB_READ}))
    h = api.auth(key.plaintext)
    assert (await api.client.get("/v1/kb/templates", headers=h)).status_code == 200
    refused = await api.client.post("/v1/kb/templates/support-desk", headers=h)
    assert_problem(refused, 403, "insufficient_scope")
    assert_problem(await api.client.get("/v1/kb/templates"), 401, "unauthenticated")
