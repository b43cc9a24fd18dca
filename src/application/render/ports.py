"""Ports of the render context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.render.model import RenderJob


class TemplateEngine(Protocol):
    """Renders a template with data into text, in a sandbox: a template cannot reach the
    interpreter's internals, the file system or the network. Raises ``TemplateFailed`` for a
    template that is invalid or tries to leave the sandbox."""

    def render(self, source: str, data: Mapping[str, Any]) -> str: ...


class DocumentConverter(Protocol):
    """Markdown into HTML (raw HTML in the Markdown is escaped) and into PDF."""

    def to_html(self, markdown: str, *, title: str) -> str: ...

    def to_pdf(self, markdown: str, *, title: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Blob:
    data: bytes
    content_type: str


class BlobStore(Protocol):
    """Artifacts by key. ``put`` overwrites and is durable when it returns; ``get`` returns
    None for a missing key. Raises ``ServiceUnavailable`` when the store cannot be reached."""

    async def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    async def get(self, key: str) -> Blob | None: ...

    async def delete(self, key: str) -> bool: ...


class RenderJobRepository(Protocol):
    """Render jobs of one tenant at a time. ``add`` refuses an existing id (``Conflict``);
    ``save`` writes the job's state. ``audit`` is appended to the tenant's audit trail in the
    same transaction, at the job's ``created_at_ms`` (add) or ``updated_at_ms`` (save)."""

    async def add(self, job: RenderJob, *, audit: AuditEvent) -> None: ...

    async def get(self, tenant_id: TenantId, render_id: str) -> RenderJob | None: ...

    async def save(self, job: RenderJob, *, audit: AuditEvent | None = None) -> None: ...
