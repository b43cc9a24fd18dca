"""ContentSource contract on the Markdown folder and on BaseHub (a fake speaking its wire
format over HTTP), plus BaseHub's error mapping and schema-drift reporting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.content.basehub import BaseHubContentSource
from adapters.content.folder import FolderContentSource
from adapters.llm.http import HttpRetryPolicy
from application.errors import ContentSchemaError, ServiceUnavailable
from tests.content.fake_basehub import TOKEN, FakeBaseHub

DOCS = {
    "doc-a": ("Refund policy", "Refunds within **30 days**."),
    "doc-b": ("Shipping times", "We ship in 2 days."),
    "doc-c": ("Invoices", "Monthly invoices."),
    "doc-d": ("Returns of refunds", "See refunds."),
    "doc-e": ("Warranty", "Two years."),
}


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeBaseHub]:
    hub = await FakeBaseHub().start()
    for ref, (title, md) in DOCS.items():
        hub.put(ref, title, md)
    yield hub
    await hub.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def basehub(fake: FakeBaseHub, client: httpx.AsyncClient, **kw) -> BaseHubContentSource:
    kw.setdefault("token", TOKEN)
    return BaseHubContentSource(
        client,
        collection="documents",
        endpoint=fake.url,
        retry=HttpRetryPolicy(max_attempts=3, sleep=_no_sleep),
        **kw,
    )


@pytest.fixture(params=["folder", "basehub"])
async def source(request, tmp_path, fake, client):
    if request.param == "folder":
        for ref, (title, md) in DOCS.items():
            (tmp_path / f"{ref}.md").write_text(f"---\ntitle: {title}\n---\n{md}\n")
        return FolderContentSource(tmp_path)
    return basehub(fake, client)


async def test_a_document_is_read_by_ref_with_its_markdown(source) -> None:
    doc = await source.get("doc-a")
    assert doc is not None
    assert (doc.ref, doc.title, doc.markdown) == ("doc-a", "Refund policy", DOCS["doc-a"][1])
    assert await source.get("no-such-doc") is None


async def test_paging_visits_every_document_once(source) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        page = await source.page(cursor=cursor, limit=2)
        seen += [d.ref for d in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(DOCS) and len(seen) == len(DOCS)
    assert pages == 3


async def test_search_finds_documents_by_title_words(source) -> None:
    found = {d.ref for d in await source.search("refund", limit=5)}
    assert {"doc-a"} <= found
    assert "doc-e" not in found


async def test_basehub_gets_the_token_branch_and_draft_headers(fake, client) -> None:
    await basehub(fake, client, ref="staging", draft=True).get("doc-a")
    headers = fake.requests[-1]["headers"]
    assert headers["x-basehub-token"] == TOKEN
    assert headers["x-basehub-ref"] == "staging"
    assert headers["x-basehub-draft"] == "true"
    assert fake.requests[-1]["variables"] == {"id": "doc-a"}
    assert "body { markdown }" in fake.requests[-1]["query"]


async def test_basehub_schema_drift_fails_loudly_naming_the_field(fake, client) -> None:
    fake.drift = True
    with pytest.raises(ContentSchemaError) as caught:
        await basehub(fake, client).get("doc-a")
    assert "_title" in caught.value.message


async def test_basehub_errors_are_mapped_and_transient_ones_retried(fake, client) -> None:
    with pytest.raises(ServiceUnavailable, match="token was refused"):
        await basehub(fake, client, token="wrong").get("doc-a")
    fake.statuses = [503, 429]
    assert (await basehub(fake, client).get("doc-a")) is not None
    fake.statuses = [500, 500, 500]
    with pytest.raises(ServiceUnavailable, match="500"):
        await basehub(fake, client).get("doc-a")
    with pytest.raises(ContentSchemaError, match="refused the query"):
        await BaseHubContentSource(client, token=TOKEN, collection="posts", endpoint=fake.url).get(
            "doc-a"
        )


async def test_a_folder_ref_cannot_climb_out_of_the_folder(tmp_path) -> None:
    (tmp_path / "inside").mkdir()
    (tmp_path / "secret.md").write_text("top secret")
    source = FolderContentSource(tmp_path / "inside")
    assert await source.get("../secret") is None
