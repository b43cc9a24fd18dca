"""Every list endpoint pages with a cursor: a thread's messages and the admin API's tenants
(the knowledge base's documents are paged in test_knowledge_api)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.test_http_api import Api, make_api, run_body

ADMIN = {"Authorization": "Bearer " + "a" * 40}


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_AUTH__ADMIN_TOKEN="a" * 40):
        yield a


async def every_page(api: Api, path: str, key: str, headers: dict[str, str]) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.client.get(url, headers=headers)).json()
        assert len(page[key]) <= 2
        items += page[key]
        cursor = page.get("nextCursor")
        if cursor is None:
            return items


async def test_a_threads_messages_page_oldest_first(api: Api) -> None:
    for n in range(3):
        assert (await api.run(run_body(f"r{n}", "t1", f"question {n}"))).status_code == 200
    whole = (await api.client.get("/v1/threads/t1/messages", headers=api.auth())).json()
    assert "nextCursor" not in whole and len(whole["messages"]) == 6
    paged = await every_page(api, "/v1/threads/t1/messages", "messages", api.auth())
    assert paged == whole["messages"]
    bad = await api.client.get("/v1/threads/t1/messages?cursor=xyz", headers=api.auth())
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


async def test_the_admin_tenant_list_pages_by_slug(api: Api) -> None:
    for slug in ("acme", "zeta", "mid", "beta"):
        made = await api.client.post("/admin/v1/tenants", json={"slug": slug}, headers=ADMIN)
        assert made.status_code == 201
    paged = await every_page(api, "/admin/v1/tenants", "tenants", ADMIN)
    slugs = [t["slug"] for t in paged]
    assert slugs == sorted(slugs) and {"acme", "beta", "demo", "mid", "zeta"} <= set(slugs)
