"""Render pipeline: request a render, carry it out in a worker, read and download it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from application.authz import authorize
from application.content.use_cases import ReadContent
from application.errors import (
    ApplicationError,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    TemplateFailed,
)
from application.jobs.ports import JobQueue
from application.knowledge.ports import KnowledgeStore
from application.ports import Clock
from application.render.ports import (
    Blob,
    BlobStore,
    DocumentConverter,
    RenderJobRepository,
    TemplateEngine,
)
from domain.audit.events import render_finished, render_requested
from domain.errors import DomainError
from domain.ids import TenantId, new_id
from domain.jobs.model import Job
from domain.render.model import MEDIA_TYPES, RenderFormat, RenderJob, RenderState, artifact_key
from domain.tenancy.model import Principal, Scope

log = logging.getLogger("sba.render")

RENDER_JOB = "render.run"
QUEUE_DOWN = "queue_unavailable"
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_DATA_BYTES = 256 * 1024
MAX_OUTPUT_CHARS = 2_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderCommand:
    principal: Principal
    template: str  # "inline:<text>", "kb:<document id>" or "content:<ref>"
    data: Mapping[str, Any]
    formats: Sequence[str] = ("markdown", "html")
    render_id: str | None = None


def render_job(job: RenderJob, tenant_slug: str) -> Job:
    return Job(
        kind=RENDER_JOB,
        tenant_id=job.tenant_id,
        key=f"render:{job.id}",
        args={"render_id": job.id, "tenant_slug": tenant_slug},
    )


class RequestRender:
    """Validates and records a render, then queues it. In-process the render is finished when
    this returns; with a broker it is QUEUED until a worker takes it."""

    def __init__(self, renders: RenderJobRepository, queue: JobQueue, clock: Clock) -> None:
        self._renders = renders
        self._queue = queue
        self._clock = clock

    async def __call__(self, cmd: RenderCommand) -> RenderJob:
        authorize(cmd.principal, Scope.RENDERS, write=True, action="render documents")
        kind, _, rest = cmd.template.partition(":")
        if kind not in ("inline", "kb", "content") or not rest:
            raise InvalidInput(
                "template is 'inline:<template text>', 'kb:<document id>' or 'content:<ref>'"
            )
        if len(cmd.template.encode()) > MAX_TEMPLATE_BYTES:
            raise InvalidInput(f"the template is larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            formats = tuple(RenderFormat(f) for f in cmd.formats)
        except ValueError as exc:
            raise InvalidInput(
                "formats are among: " + ", ".join(f.value for f in RenderFormat)
            ) from exc
        if len(repr(cmd.data)) > MAX_DATA_BYTES:
            raise InvalidInput(f"the data is larger than {MAX_DATA_BYTES} bytes")
        now = self._clock.now_ms()
        try:
            job = RenderJob(
                id=cmd.render_id or new_id("rnd"),
                tenant_id=cmd.principal.tenant_id,
                # An inline template is kept whole; references are short.
                template=cmd.template if kind != "inline" else f"inline:{_digest(rest)}",
                data=dict(cmd.data),
                formats=formats,
                requested_by=cmd.principal.subject,
                created_at_ms=now,
                updated_at_ms=now,
            )
        except DomainError as exc:
            raise InvalidInput(exc.message) from exc
        # The inline text travels in the data under a reserved key, so the job row holds it.
        if kind == "inline":
            job.data = {**job.data, _INLINE: rest}
        await self._renders.add(job, audit=render_requested(job, actor=cmd.principal.subject))
        try:
            await self._queue.enqueue(render_job(job, cmd.principal.tenant_slug))
        except ServiceUnavailable:
            # Recorded but never queued, it would stay QUEUED for good (and a retry with the
            # same id is a conflict): it fails now, and the caller hears the queue is down.
            job.fail("the render could not be queued; request it again", self._clock.now_ms())
            await self._renders.save(job, audit=render_finished(job, error_code=QUEUE_DOWN))
            raise
        return await self._renders.get(job.tenant_id, job.id) or job


_INLINE = "__template__"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ExecuteRender:
    """The ``render.run`` job. A done render is left alone (a redelivery renders nothing
    twice); otherwise the job is (re)started, rendered, its artifacts written under keys fixed
    by its id (a repeat overwrites), then marked done. A template error fails the render at
    once, as retrying cannot fix it; other errors are retried and the last marks it failed."""

    def __init__(
        self,
        renders: RenderJobRepository,
        engine: TemplateEngine,
        converter: DocumentConverter,
        blobs: BlobStore,
        knowledge: KnowledgeStore,
        content: ReadContent,
        clock: Clock,
        *,
        last_attempt: int = 5,
    ) -> None:
        self._renders = renders
        self._engine = engine
        self._converter = converter
        self._blobs = blobs
        self._knowledge = knowledge
        self._content = content
        self._clock = clock
        self._last_attempt = last_attempt

    async def __call__(self, job: Job) -> None:
        render = await self._renders.get(job.tenant_id, job.args["render_id"])
        if render is None or render.state is RenderState.DONE:
            return
        render.start(self._clock.now_ms())
        await self._renders.save(render)
        try:
            artifacts = await self._render(render, job.args.get("tenant_slug", ""))
        except TemplateFailed as exc:
            render.fail(exc.message, self._clock.now_ms())
            await self._renders.save(render, audit=render_finished(render, error_code=exc.code))
            return
        except Exception as exc:
            if job.attempt >= self._last_attempt:
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                render.fail(message, self._clock.now_ms())
                code = (
                    exc.code if isinstance(exc, ApplicationError | DomainError) else "render_failed"
                )
                await self._renders.save(render, audit=render_finished(render, error_code=code))
            raise
        render.complete(artifacts, self._clock.now_ms())
        await self._renders.save(render, audit=render_finished(render))

    async def _template(self, render: RenderJob, tenant_slug: str) -> tuple[str, str]:
        kind, _, ref = render.template.partition(":")
        if kind == "inline":
            return "Document", str(render.data.get(_INLINE, ""))
        if kind == "kb":
            doc = await self._knowledge.get(render.tenant_id, ref)
            if doc is None:
                raise TemplateFailed(f"no knowledge-base document {ref} to use as a template")
            return doc.title, doc.content
        found = await self._content(render.tenant_id, tenant_slug, ref)
        if found is None:
            raise TemplateFailed(f"the content source has no document {ref}")
        return found.title, found.markdown

    async def _render(self, render: RenderJob, tenant_slug: str) -> dict[str, str]:
        title, source = await self._template(render, tenant_slug)
        data = {k: v for k, v in render.data.items() if k != _INLINE}
        # Rendering is CPU work: a thread keeps the event loop (and every stream) responsive.
        markdown = await asyncio.to_thread(self._engine.render, source, data)
        if len(markdown) > MAX_OUTPUT_CHARS:
            raise TemplateFailed(
                f"the rendered document is longer than {MAX_OUTPUT_CHARS} characters"
            )
        artifacts: dict[str, str] = {}
        for fmt in render.formats:
            if fmt is RenderFormat.MARKDOWN:
                body = markdown.encode()
            elif fmt is RenderFormat.HTML:
                body = (
                    await asyncio.to_thread(self._converter.to_html, markdown, title=title)
                ).encode()
            else:
                body = await asyncio.to_thread(self._converter.to_pdf, markdown, title=title)
            key = artifact_key(render.tenant_id, render.id, fmt)
            await self._blobs.put(key, body, content_type=MEDIA_TYPES[fmt])
            artifacts[fmt.value] = key
        return artifacts


class GetRender:
    def __init__(self, renders: RenderJobRepository) -> None:
        self._renders = renders

    async def __call__(self, principal: Principal, render_id: str) -> RenderJob:
        authorize(principal, Scope.RENDERS, write=False, action="read renders")
        job = await self._renders.get(principal.tenant_id, render_id)
        if job is None:
            raise NotFound(f"no render {render_id}")
        return job


class LinkSigner:
    """Expiring download links: an HMAC over tenant, render, format and expiry."""

    def __init__(self, secret: bytes, clock: Clock, *, ttl_s: int = 900) -> None:
        if len(secret) < 16:
            raise ValueError("the link-signing secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock
        self.ttl_s = ttl_s

    def _mac(self, tenant_id: str, render_id: str, fmt: str, expires: int) -> str:
        msg = f"{tenant_id}\0{render_id}\0{fmt}\0{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, tenant_id: str, render_id: str, fmt: str) -> tuple[int, str]:
        expires = self._clock.now_ms() // 1000 + self.ttl_s
        return expires, self._mac(tenant_id, render_id, fmt, expires)

    def link(self, tenant_id: str, render_id: str, fmt: str) -> tuple[str, int]:
        """The download path of one artifact, and when it expires (epoch seconds)."""
        expires, sig = self.sign(tenant_id, render_id, fmt)
        path = (
            f"/v1/renders/{render_id}/artifacts/{fmt}"
            f"?tenant={tenant_id}&expires={expires}&signature={sig}"
        )
        return path, expires

    def check(self, tenant_id: str, render_id: str, fmt: str, expires: int, signature: str) -> None:
        good = self._mac(tenant_id, render_id, fmt, expires)
        if not hmac.compare_digest(good.encode(), signature.encode()):
            raise Forbidden("the download link is not valid", code="link_invalid")
        if expires < self._clock.now_ms() // 1000:
            raise Forbidden("the download link has expired", code="link_expired")


class DownloadArtifact:
    """An artifact by signed link: the link names the tenant, so no credentials are needed."""

    def __init__(self, renders: RenderJobRepository, blobs: BlobStore, signer: LinkSigner) -> None:
        self._renders = renders
        self._blobs = blobs
        self._signer = signer

    async def __call__(
        self, tenant_id: str, render_id: str, fmt: str, expires: int, signature: str
    ) -> Blob:
        self._signer.check(tenant_id, render_id, fmt, expires, signature)
        job = await self._renders.get(TenantId(tenant_id), render_id)
        if job is None or job.state is not RenderState.DONE or fmt not in job.artifacts:
            raise NotFound(f"render {render_id} has no {fmt} artifact")
        blob = await self._blobs.get(job.artifacts[fmt])
        if blob is None:
            raise NotFound(f"the {fmt} artifact of render {render_id} is gone")
        return blob
