"""BaseHub as a content source: its GraphQL API over httpx.

Documents are the items of one list block (``collection``), each with ``_id``, ``_title``,
``_slug``, ``_sys.lastModifiedAt`` and a rich-text field (``body_field``) fetched as Markdown.
The token goes in ``x-basehub-token``; ``ref`` and ``draft`` select a branch and draft content
(``x-basehub-ref``, ``x-basehub-draft``). Every answer is decoded into msgspec types, so a
schema that drifted fails with the path of the field that did not match."""

from __future__ import annotations

import re

import httpx
import msgspec

from adapters.llm.http import HttpRetryPolicy, retry_after_s
from application.content.ports import ContentDocument, ContentPage
from application.errors import ContentSchemaError, ServiceUnavailable

DEFAULT_ENDPOINT = "https://api.basehub.com/graphql"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _RichText(msgspec.Struct, frozen=True):
    markdown: str


class _Sys(msgspec.Struct, frozen=True):
    last_modified_at: str | None = msgspec.field(default=None, name="lastModifiedAt")


class _Item(msgspec.Struct, frozen=True):
    id: str = msgspec.field(name="_id")
    title: str = msgspec.field(name="_title")
    slug: str = msgspec.field(default="", name="_slug")
    sys: _Sys | None = msgspec.field(default=None, name="_sys")
    body: _RichText | None = None


class _Meta(msgspec.Struct, frozen=True):
    total_count: int = msgspec.field(name="totalCount")


class _List(msgspec.Struct, frozen=True):
    items: list[_Item]
    meta: _Meta | None = msgspec.field(default=None, name="_meta")


class _GraphQLError(msgspec.Struct, frozen=True):
    message: str


class _Answer(msgspec.Struct, frozen=True):
    data: dict[str, _List] | None = None
    errors: list[_GraphQLError] | None = None


_answer = msgspec.json.Decoder(_Answer)


class BaseHubContentSource:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token: str,
        collection: str,
        body_field: str = "body",
        endpoint: str = DEFAULT_ENDPOINT,
        ref: str | None = None,
        draft: bool = False,
        retry: HttpRetryPolicy | None = None,
        name: str = "basehub",
    ) -> None:
        for label, value in (("collection", collection), ("body_field", body_field)):
            if not _NAME.match(value):
                raise ValueError(f"{label} {value!r} is not a GraphQL field name")
        self._client = client
        self._endpoint = endpoint
        self._collection = collection
        self._body = body_field
        self._retry = retry or HttpRetryPolicy()
        self.name = name
        self._headers = {"x-basehub-token": token, "content-type": "application/json"}
        if ref:
            self._headers["x-basehub-ref"] = ref
        if draft:
            self._headers["x-basehub-draft"] = "true"

    def _query(self, args: str, variables: str) -> str:
        return (
            f"query Documents({variables}) {{ {self._collection}({args}) {{ "
            "_meta { totalCount } "
            f"items {{ _id _title _slug _sys {{ lastModifiedAt }} {self._body} {{ markdown }} }} "
            "} }"
        )

    async def _run(self, query: str, variables: dict[str, object]) -> _List:
        body = msgspec.json.encode({"query": query, "variables": variables})
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = await self._client.post(
                    self._endpoint, content=body, headers=self._headers
                )
            except httpx.TimeoutException as exc:
                problem = f"BaseHub did not answer in time ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                problem = f"BaseHub cannot be reached: {exc}"
            else:
                if response.status_code == 200:
                    return self._decode(response.content)
                problem = f"BaseHub answered {response.status_code}"
                if response.status_code in (401, 403):
                    raise ServiceUnavailable(f"{problem}: the token was refused")
                if response.status_code != 429 and response.status_code < 500:
                    raise ServiceUnavailable(f"{problem}: {response.text[:300]}")
                wait = retry_after_s(response.headers)
            attempt += 1
            if attempt >= self._retry.max_attempts:
                raise ServiceUnavailable(problem)
            await self._retry.sleep(self._retry.delay_s(attempt - 1, wait))

    def _decode(self, raw: bytes) -> _List:
        try:
            answer = _answer.decode(raw)
        except msgspec.ValidationError as exc:
            raise ContentSchemaError(f"BaseHub answered in an unexpected shape: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ServiceUnavailable(f"BaseHub answered with invalid JSON: {exc}") from exc
        if answer.errors:
            raise ContentSchemaError(
                "BaseHub refused the query: " + "; ".join(e.message for e in answer.errors)
            )
        listing = (answer.data or {}).get(self._collection)
        if listing is None:
            raise ContentSchemaError(
                f"BaseHub answered without the list block {self._collection!r} "
                f"(at `$.data.{self._collection}`)"
            )
        return listing

    def _document(self, item: _Item) -> ContentDocument:
        if item.body is None:
            raise ContentSchemaError(
                f"BaseHub document {item.id} has no rich text {self._body!r} "
                f"(at `$.data.{self._collection}.items[].{self._body}.markdown`)"
            )
        return ContentDocument(
            ref=item.id,
            title=item.title,
            markdown=item.body.markdown,
            slug=item.slug,
            updated_at=(item.sys.last_modified_at or "") if item.sys else "",
        )

    async def get(self, ref: str) -> ContentDocument | None:
        listing = await self._run(
            self._query("first: 1, filter: { _sys_id: $id }", "$id: String!"), {"id": ref}
        )
        return self._document(listing.items[0]) if listing.items else None

    async def page(self, *, cursor: str | None = None, limit: int = 50) -> ContentPage:
        try:
            skip = int(cursor) if cursor else 0
        except ValueError as exc:
            raise ContentSchemaError(f"the page cursor {cursor!r} is not ours") from exc
        listing = await self._run(
            self._query(
                "first: $first, skip: $skip, orderBy: _sys_createdAt__ASC",
                "$first: Int!, $skip: Int!",
            ),
            {"first": limit, "skip": skip},
        )
        seen = skip + len(listing.items)
        total = listing.meta.total_count if listing.meta else seen
        more = bool(listing.items) and seen < total
        return ContentPage(
            items=[self._document(i) for i in listing.items],
            next_cursor=str(seen) if more else None,
        )

    async def search(self, query: str, *, limit: int = 5) -> list[ContentDocument]:
        listing = await self._run(
            self._query(
                "first: $first, "
                "filter: { _sys_title: { matches: { pattern: $q, caseSensitive: false } } }",
                "$first: Int!, $q: String!",
            ),
            {"first": limit, "q": query},
        )
        return [self._document(i) for i in listing.items]
