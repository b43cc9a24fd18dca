"""Render jobs: a template and data, rendered into documents, with a state machine."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvariantViolated
from domain.ids import TenantId, is_valid_client_id

MAX_TEMPLATE_REF = 500
MAX_ERROR = 2000


class RenderFormat(enum.StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"


MEDIA_TYPES = {
    RenderFormat.MARKDOWN: "text/markdown; charset=utf-8",
    RenderFormat.HTML: "text/html; charset=utf-8",
    RenderFormat.PDF: "application/pdf",
}


class RenderState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# RUNNING -> RUNNING: a worker died mid-render and the job was delivered again.
# FAILED -> RUNNING: a dead-lettered render retried by an operator.
_NEXT: dict[RenderState, frozenset[RenderState]] = {
    RenderState.QUEUED: frozenset({RenderState.RUNNING, RenderState.FAILED}),
    RenderState.RUNNING: frozenset({RenderState.RUNNING, RenderState.DONE, RenderState.FAILED}),
    RenderState.FAILED: frozenset({RenderState.RUNNING}),
    RenderState.DONE: frozenset(),
}


class IllegalRenderTransition(InvariantViolated):
    code = "illegal_render_transition"


@dataclass(slots=True, kw_only=True, eq=False)
class RenderJob:
    """An entity: compared by id. ``artifacts`` maps each format to its blob key, and is
    complete exactly when the job is done."""

    id: str
    tenant_id: TenantId
    template: str
    data: Mapping[str, Any] = field(default_factory=dict)
    formats: tuple[RenderFormat, ...] = (RenderFormat.MARKDOWN, RenderFormat.HTML)
    requested_by: str = ""
    state: RenderState = RenderState.QUEUED
    attempts: int = 0
    error: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    created_at_ms: int = 0
    updated_at_ms: int = 0

    def __post_init__(self) -> None:
        if not is_valid_client_id(self.id):
            raise InvariantViolated(f"render id {self.id!r} is not a valid identifier")
        if not self.template.strip() or len(self.template) > MAX_TEMPLATE_REF:
            raise InvariantViolated(f"a template reference is 1 to {MAX_TEMPLATE_REF} characters")
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise InvariantViolated("formats are one or more distinct formats")

    def _move(self, to: RenderState, now_ms: int) -> None:
        if to not in _NEXT[self.state]:
            raise IllegalRenderTransition(f"a {self.state} render cannot become {to}")
        self.state = to
        self.updated_at_ms = now_ms

    def start(self, now_ms: int) -> None:
        self._move(RenderState.RUNNING, now_ms)
        self.attempts += 1
        self.error = None
        self.artifacts = {}

    def complete(self, artifacts: Mapping[str, str], now_ms: int) -> None:
        if set(artifacts) != {f.value for f in self.formats}:
            raise InvariantViolated("a finished render has one artifact per requested format")
        self._move(RenderState.DONE, now_ms)
        self.artifacts = dict(artifacts)

    def fail(self, error: str, now_ms: int) -> None:
        self._move(RenderState.FAILED, now_ms)
        self.error = error[:MAX_ERROR]
        self.artifacts = {}

    @property
    def finished(self) -> bool:
        return self.state in (RenderState.DONE, RenderState.FAILED)


def artifact_key(tenant_id: TenantId, render_id: str, fmt: RenderFormat) -> str:
    """Where a render's artifact is stored: deterministic, so a repeated render overwrites
    rather than duplicates."""
    ext = {RenderFormat.MARKDOWN: "md", RenderFormat.HTML: "html", RenderFormat.PDF: "pdf"}[fmt]
    return f"renders/{tenant_id}/{render_id}.{ext}"
