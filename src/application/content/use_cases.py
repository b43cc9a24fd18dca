"""Content from a CMS: read through the cache, synced into the knowledge base, refreshed by
signed webhooks."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from application.content.ports import ContentDocument, ContentSource, ContentSources, ReplayGuard
from application.errors import Forbidden, InvalidInput, NotFound, ServiceUnavailable
from application.jobs.ports import JobQueue
from application.json_limits import TOO_DEEP, json_too_deep
from application.knowledge.ports import KnowledgeStore
from application.knowledge.use_cases import IngestCommand, IngestDocument, document_tag
from application.ports import KB_CACHE_TAG, Cache, UnitOfWork
from domain.ids import TenantId
from domain.jobs.model import Job
from domain.tenancy.model import Principal, Role

log = logging.getLogger("sba.content")

SYNC_JOB = "content.sync"
CONTENT_TAG = "content"
MAX_WEBHOOK_BYTES = 256 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def content_tag(ref: str) -> str:
    return f"content:{ref}"


def kb_document_id(source: str, ref: str) -> str:
    """The knowledge-base id of a synced document: derived from the ref, so syncing the same
    document again replaces it rather than adding a copy."""
    readable = _SAFE.sub("-", ref)[:60].strip("-") or "doc"
    digest = hashlib.sha256(f"{source}\0{ref}".encode()).hexdigest()[:12]
    return f"cms-{readable}-{digest}"


def sync_job(tenant_id: TenantId, tenant_slug: str, ref: str | None) -> Job:
    """Sync one document (``ref``) or, with None, the whole source."""
    return Job(
        kind=SYNC_JOB,
        tenant_id=tenant_id,
        key=f"sync:{ref or '*'}",
        args={"tenant_slug": tenant_slug, **({"ref": ref} if ref else {})},
    )


def _encode(doc: ContentDocument) -> bytes:
    return json.dumps(
        {
            "ref": doc.ref,
            "title": doc.title,
            "markdown": doc.markdown,
            "slug": doc.slug,
            "updated_at": doc.updated_at,
        },
        ensure_ascii=False,
    ).encode()


def _decode(raw: bytes) -> ContentDocument:
    d = json.loads(raw)
    return ContentDocument(
        ref=d["ref"],
        title=d["title"],
        markdown=d["markdown"],
        slug=d["slug"],
        updated_at=d["updated_at"],
    )


class ReadContent:
    """A content document by ref, through the tenant's cache: entries carry the tag of their
    ref, so a webhook naming the ref drops exactly them. An unreachable cache is a miss."""

    def __init__(self, sources: ContentSources, cache: Cache, *, ttl_s: float = 300.0) -> None:
        self._sources = sources
        self._cache = cache
        self._ttl_s = ttl_s

    async def __call__(
        self, tenant_id: TenantId, tenant_slug: str, ref: str
    ) -> ContentDocument | None:
        source = self._sources.for_tenant(tenant_slug)
        if source is None:
            return None
        key = f"content:{source.name}:{ref}"
        try:
            raw = await self._cache.get(tenant_id, key)
        except ServiceUnavailable:
            raw = None
        if raw is not None:
            return _decode(raw)
        doc = await source.get(ref)
        if doc is not None:
            with contextlib.suppress(ServiceUnavailable):
                await self._cache.set(
                    tenant_id,
                    key,
                    _encode(doc),
                    ttl_s=self._ttl_s,
                    tags=(content_tag(ref), CONTENT_TAG),
                )
        return doc


class SyncContent:
    """The ``content.sync`` job: copies one document (or every document) of the tenant's
    source into its knowledge base, where indexing takes over. A document the source no longer
    has is removed. Idempotent: the knowledge-base id is derived from the ref, and an unchanged
    document is not indexed again."""

    def __init__(
        self, sources: ContentSources, ingest: IngestDocument, store: KnowledgeStore
    ) -> None:
        self._sources = sources
        self._ingest = ingest
        self._store = store

    async def __call__(self, job: Job) -> None:
        slug = job.args["tenant_slug"]
        source = self._sources.for_tenant(slug)
        if source is None:
            return
        principal = Principal(
            tenant_id=job.tenant_id,
            tenant_slug=slug,
            subject=f"system:{source.name}",
            role=Role.ADMIN,
        )
        ref = job.args.get("ref")
        if ref is not None:
            doc = await source.get(ref)
            if doc is None:
                await self._store.delete(job.tenant_id, kb_document_id(source.name, ref))
            else:
                await self._put(principal, source, doc)
            return
        cursor: str | None = None
        while True:
            page = await source.page(cursor=cursor, limit=50)
            for doc in page.items:
                await self._put(principal, source, doc)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _put(self, principal: Principal, source: ContentSource, doc: ContentDocument) -> None:
        await self._ingest(
            IngestCommand(
                principal=principal,
                document_id=kb_document_id(source.name, doc.ref),
                title=doc.title or doc.ref,
                content=doc.markdown,
                content_type="markdown",
                source=f"{source.name}:{doc.ref}",
                metadata={"ref": doc.ref, **({"slug": doc.slug} if doc.slug else {})},
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookOutcome:
    refs: tuple[str, ...]  # the documents named; empty means the whole source changed
    invalidated: int
    enqueued: int


def _refs(payload: Any) -> tuple[str, ...]:
    """The block ids a change event names. BaseHub's commit event names none (the whole
    repository may have changed); collection and block events carry the id of what changed."""
    if not isinstance(payload, dict):
        raise InvalidInput("the webhook body is not a JSON object")
    data = payload.get("data")
    found: list[str] = []
    for holder in (payload, data if isinstance(data, dict) else {}):
        for key in ("blockId", "rowId", "_id", "id"):
            value = holder.get(key)
            if isinstance(value, str) and value:
                found.append(value)
        ids = holder.get("blockIds") or holder.get("ids")
        if isinstance(ids, list):
            found.extend(v for v in ids if isinstance(v, str) and v)
    return tuple(dict.fromkeys(found))


class HandleContentWebhook:
    """A BaseHub webhook: the signature (HMAC-SHA256 of the raw body, hex) is checked in
    constant time, a body already accepted within the window is refused as a replay, then the
    cached content it names is dropped and a sync is queued (of the named documents, or of
    everything)."""

    def __init__(
        self,
        sources: ContentSources,
        replay: ReplayGuard,
        cache: Cache,
        queue: JobQueue,
        uow: UnitOfWork,
        *,
        replay_window_s: float = 86_400.0,
    ) -> None:
        self._uow = uow
        self._sources = sources
        self._replay = replay
        self._cache = cache
        self._queue = queue
        self._window = replay_window_s

    async def __call__(
        self, tenant_slug: str, body: bytes, signature: str | None
    ) -> WebhookOutcome:
        secret = self._sources.webhook_secret(tenant_slug)
        if secret is None or self._sources.for_tenant(tenant_slug) is None:
            raise NotFound(f"tenant {tenant_slug} has no content webhook")
        if not signature:
            raise Forbidden("the webhook is not signed", code="webhook_signature_missing")
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        given = signature.strip().lower().removeprefix("sha256=")
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise Forbidden(
                "the webhook signature does not match", code="webhook_signature_invalid"
            )
        if len(body) > MAX_WEBHOOK_BYTES:
            raise InvalidInput(f"the webhook body is larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            payload = json.loads(body)
        except RecursionError:
            raise InvalidInput(TOO_DEEP, code="json_too_deep") from None
        except ValueError as exc:
            raise InvalidInput(f"the webhook body is not JSON: {exc}") from exc
        if json_too_deep(payload):
            raise InvalidInput(TOO_DEEP, code="json_too_deep")
        refs = _refs(payload)
        # Only a verified webhook costs a lookup (on the audited cross-tenant path).
        async with self._uow.admin_transaction("webhook:basehub", "content.webhook") as tx:
            tenant = await tx.tenants.get_by_slug(tenant_slug)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_slug}")
        tenant_id = tenant.id
        if not await self._replay.first_seen(
            f"webhook:{tenant_id}", expected, window_s=self._window
        ):
            raise Forbidden("this webhook was already delivered", code="webhook_replayed")
        tags = [content_tag(r) for r in refs] if refs else [CONTENT_TAG]
        invalidated = await self._cache.invalidate(tenant_id, tags)
        jobs = [sync_job(tenant_id, tenant_slug, r) for r in refs] or [
            sync_job(tenant_id, tenant_slug, None)
        ]
        for job in jobs:
            await self._queue.enqueue(job)
        log.info(
            "content webhook for %s: %d refs, %d cache entries dropped",
            tenant_slug,
            len(refs),
            invalidated,
        )
        return WebhookOutcome(refs=refs, invalidated=invalidated, enqueued=len(jobs))


class ReadDocument:
    """What the ``get_document`` tool reads: a knowledge-base document through the tenant's
    cache, or, for a document synced from a content source, the source's current version
    (itself cached by ref, so a webhook naming the ref refreshes it at once). An id the
    knowledge base does not know is tried as a content ref."""

    def __init__(
        self,
        store: KnowledgeStore,
        content: ReadContent,
        cache: Cache,
        *,
        ttl_s: float = 300.0,
    ) -> None:
        self._store = store
        self._content = content
        self._cache = cache
        self._ttl_s = ttl_s

    async def __call__(
        self, tenant_id: TenantId, tenant_slug: str, document_id: str
    ) -> dict[str, str] | None:
        key = f"kbdoc:{document_id}"
        try:
            raw = await self._cache.get(tenant_id, key)
        except ServiceUnavailable:
            raw = None
        if raw is not None:
            cached: dict[str, str] = json.loads(raw)
            return cached
        doc = await self._store.get(tenant_id, document_id)
        if doc is None:
            found = await self._content(tenant_id, tenant_slug, document_id)
            if found is None:
                return None
            return {
                "documentId": found.ref,
                "title": found.title,
                "source": "content",
                "content": found.markdown,
            }
        ref = doc.metadata.get("ref")
        if ref:
            fresh = await self._content(tenant_id, tenant_slug, ref)
            if fresh is not None:
                return {
                    "documentId": doc.id,
                    "title": fresh.title,
                    "source": doc.source,
                    "content": fresh.markdown,
                }
        value = {
            "documentId": doc.id,
            "title": doc.title,
            "source": doc.source,
            "content": doc.content,
        }
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(
                tenant_id,
                key,
                json.dumps(value).encode(),
                ttl_s=self._ttl_s,
                tags=(document_tag(doc.id), KB_CACHE_TAG),
            )
        return value
