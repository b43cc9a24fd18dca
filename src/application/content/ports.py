"""Ports of the content context: documents kept in a CMS (BaseHub) or a folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentDocument:
    """One document of a content source, its rich text as Markdown. ``ref`` is the source's
    stable id for it."""

    ref: str
    title: str
    markdown: str
    slug: str = ""
    updated_at: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentPage:
    items: Sequence[ContentDocument]
    next_cursor: str | None


class ContentSource(Protocol):
    """Read-only documents from outside. ``get`` returns None for a ref the source does not
    have; ``page`` pages through every document in a stable order (pass ``next_cursor`` back
    until it is None); ``search`` finds documents by words in their title or text. Raises
    ``ServiceUnavailable`` when the source cannot be reached, ``ContentSchemaError`` when it
    answers in a shape we do not understand."""

    name: str

    async def get(self, ref: str) -> ContentDocument | None: ...

    async def page(self, *, cursor: str | None = None, limit: int = 50) -> ContentPage: ...

    async def search(self, query: str, *, limit: int = 5) -> list[ContentDocument]: ...


class ContentSources(Protocol):
    """Which content source feeds which tenant, and the secret its webhooks are signed with."""

    def for_tenant(self, tenant_slug: str) -> ContentSource | None: ...

    def webhook_secret(self, tenant_slug: str) -> bytes | None: ...


class ReplayGuard(Protocol):
    """Remembers digests for a window. ``first_seen`` is atomic: of two concurrent calls with
    the same digest exactly one is True, on every instance sharing the store. Raises
    ``ServiceUnavailable`` when the store cannot be reached."""

    async def first_seen(self, scope: str, digest: str, *, window_s: float) -> bool: ...
