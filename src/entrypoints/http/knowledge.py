"""The knowledge base over HTTP: documents and search."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from application.errors import InvalidInput
from application.knowledge.use_cases import (
    DeleteDocument,
    GetDocument,
    IngestCommand,
    IngestDocument,
    Ingested,
    ListDocuments,
    SearchKnowledge,
)
from application.pagination import MAX_LIMIT
from domain.knowledge.model import IndexStatus, KbDocument
from domain.tenancy.model import Principal
from entrypoints.http.inputs import json_body


class DocumentIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    title: str
    content: str
    content_type: str = "markdown"
    source: str = ""
    metadata: dict[str, str] = {}
    id: str | None = None


class IndexOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Where indexing of the document stands: ``queued`` (search may still show the previous
    version), ``indexed`` (search reflects this version) or ``failed``."""

    state: str
    digest: str
    indexed_digest: str | None = None
    chunks: int = 0
    generation: int = 0
    error: str | None = None
    updated_at_ms: int = 0

    @classmethod
    def of(cls, s: IndexStatus) -> IndexOut:
        return cls(
            state=s.state.value,
            digest=s.digest,
            indexed_digest=s.indexed_digest,
            chunks=s.chunks,
            generation=s.generation,
            error=s.error,
            updated_at_ms=s.updated_at_ms,
        )


class DocumentOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    title: str
    content_type: str
    source: str
    metadata: dict[str, str]
    created_at_ms: int
    updated_at_ms: int
    chunks: int | None = None
    content: str | None = None
    index: IndexOut | None = None

    @classmethod
    def of(
        cls, d: KbDocument, *, status: IndexStatus | None = None, content: bool = False
    ) -> DocumentOut:
        return cls(
            id=d.id,
            title=d.title,
            content_type=d.content_type.value,
            source=d.source,
            metadata=d.metadata,
            created_at_ms=d.created_at_ms,
            updated_at_ms=d.updated_at_ms,
            chunks=status.chunks if status else None,
            content=d.content if content else None,
            index=IndexOut.of(status) if status else None,
        )


class DocumentsOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    documents: list[DocumentOut]
    # Send it back as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class HitOut(msgspec.Struct, rename="camel", kw_only=True):
    document_id: str
    title: str
    source: str
    chunk: int
    snippet: str
    score: float
    citation: str


class SearchOut(msgspec.Struct, kw_only=True):
    query: str
    results: list[HitOut]


_document_in = msgspec.json.Decoder(DocumentIn)


async def _ingest(
    request: Request[Any, Any, Any],
    principal: Principal,
    ingest: IngestDocument,
    document_id: str | None,
) -> Response[DocumentOut]:
    body = await json_body(request, _document_in)
    if document_id is not None and body.id not in (None, document_id):
        raise InvalidInput(
            "the request body is not valid: the body's id differs from the path's",
            code="validation_failed",
        )
    done: Ingested = await ingest(
        IngestCommand(
            principal=principal,
            title=body.title,
            content=body.content,
            content_type=body.content_type,
            source=body.source,
            metadata=body.metadata,
            document_id=document_id or body.id,
        )
    )
    status = 200 if done.replaced else 201
    return Response(DocumentOut.of(done.document, status=done.status), status_code=status)


class KnowledgeController(Controller):
    path = "/v1/kb"
    tags = ["knowledge base"]

    @post(
        "/documents",
        summary="Add a document (or replace the one with the body's id)",
        opt={"body": DocumentIn},
    )
    @inject
    async def create(
        self,
        request: Request[Any, Any, Any],
        principal: FromDishka[Principal],
        ingest: FromDishka[IngestDocument],
    ) -> Response[DocumentOut]:
        return await _ingest(request, principal, ingest, None)

    @put(
        "/documents/{document_id:str}",
        summary="Replace a document: re-chunk and re-index it",
        opt={"body": DocumentIn},
    )
    @inject
    async def replace(
        self,
        request: Request[Any, Any, Any],
        document_id: FromPath[str],
        principal: FromDishka[Principal],
        ingest: FromDishka[IngestDocument],
    ) -> Response[DocumentOut]:
        return await _ingest(request, principal, ingest, document_id)

    @get(
        "/documents",
        summary="The tenant's documents, by title, a page at a time",
        description="At most `limit` documents (default 100, at most 500); when more follow, "
        "`nextCursor` is set: send it back as `cursor` for the next page.",
    )
    @inject
    async def list_documents(
        self,
        principal: FromDishka[Principal],
        documents: FromDishka[ListDocuments],
        limit: Annotated[int | None, QueryParameter(ge=1, le=MAX_LIMIT)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=4096)] = None,
    ) -> DocumentsOut:
        page = await documents(principal, limit=limit, cursor=cursor)
        return DocumentsOut(
            documents=[DocumentOut.of(d) for d in page.items], next_cursor=page.next_cursor
        )

    @get("/documents/{document_id:str}", summary="A document with its content")
    @inject
    async def get_document(
        self,
        document_id: FromPath[str],
        principal: FromDishka[Principal],
        get_document: FromDishka[GetDocument],
    ) -> DocumentOut:
        document, status = await get_document(principal, document_id)
        return DocumentOut.of(document, status=status, content=True)

    @delete("/documents/{document_id:str}", summary="Delete a document", status_code=204)
    @inject
    async def delete_document(
        self,
        document_id: FromPath[str],
        principal: FromDishka[Principal],
        delete_document: FromDishka[DeleteDocument],
    ) -> None:
        await delete_document(principal, document_id)

    @get("/search", summary="Search the knowledge base: ranked chunks with citations")
    @inject
    async def search(
        self,
        principal: FromDishka[Principal],
        search: FromDishka[SearchKnowledge],
        q: Annotated[str, QueryParameter(description="the question or words to find")],
        limit: Annotated[int, QueryParameter(ge=1, le=50)] = 5,
    ) -> SearchOut:
        hits = await search(principal, q, limit)
        return SearchOut(
            query=q,
            results=[
                HitOut(
                    document_id=h.document_id,
                    title=h.title,
                    source=h.source,
                    chunk=h.ordinal,
                    snippet=h.snippet,
                    score=round(h.score, 6),
                    citation=f"[{n}] {h.title}" + (f" ({h.source})" if h.source else ""),
                )
                for n, h in enumerate(hits, 1)
            ],
        )
