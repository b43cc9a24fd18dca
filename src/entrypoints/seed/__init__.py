"""The demo tenant's starting knowledge base, and the starter templates a new workspace may load
(a support desk, an invoicing assistant: documents and render templates), shipped with the
package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from application.knowledge.use_cases import IngestCommand, IngestDocument
from domain.ids import TenantId
from domain.tenancy.model import Principal, Role


@dataclass(frozen=True, slots=True)
class SeedDocument:
    id: str
    title: str
    source: str
    content: str


def _parse(name: str, text: str) -> SeedDocument:
    """A Markdown file with front matter: ``---``, ``key: value`` lines, ``---``."""
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---\n"):
        head, _, body = text[4:].partition("\n---\n")
        for line in head.splitlines():
            key, _, value = line.partition(":")
            meta[key.strip()] = value.strip()
    stem = name.removesuffix(".md")
    return SeedDocument(
        id=f"demo-{stem}",
        title=meta.get("title", stem),
        source=meta.get("source", f"seed://{name}"),
        content=body.strip(),
    )


def _parse_with(prefix: str, name: str, text: str) -> SeedDocument:
    doc = _parse(name, text)
    return SeedDocument(
        id=f"{prefix}-{name.removesuffix('.md')}",
        title=doc.title,
        source=doc.source,
        content=doc.content,
    )


def demo_documents() -> list[SeedDocument]:
    folder = resources.files(__package__).joinpath("demo_kb")
    return [
        _parse(entry.name, entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".md")
    ]


async def seed_demo_knowledge(ingest: IngestDocument, tenant_id: TenantId) -> int:
    principal = Principal(
        tenant_id=tenant_id, tenant_slug="demo", subject="system:seed", role=Role.ADMIN
    )
    documents = demo_documents()
    for doc in documents:
        await ingest(
            IngestCommand(
                principal=principal,
                title=doc.title,
                content=doc.content,
                content_type="markdown",
                source=doc.source,
                document_id=doc.id,
            )
        )
    return len(documents)


@dataclass(frozen=True, slots=True)
class StarterTemplate:
    """A set of documents a new workspace can start from; each document's id is
    ``<template>-<file>``, so loading a template again replaces its documents."""

    name: str
    title: str
    description: str
    documents: tuple[SeedDocument, ...]


def starter_templates() -> list[StarterTemplate]:
    root = resources.files(__package__).joinpath("templates")
    found = []
    for folder in sorted(root.iterdir(), key=lambda e: e.name):
        if not folder.is_dir():
            continue
        about: dict[str, str] = {}
        documents = []
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".md"):
                continue
            text = entry.read_text(encoding="utf-8")
            if entry.name == "about.md":
                head = text[4:].partition("\n---")[0]
                about = {
                    k.strip(): v.strip()
                    for k, _, v in (line.partition(":") for line in head.splitlines())
                }
                continue
            documents.append(_parse_with(folder.name, entry.name, text))
        found.append(
            StarterTemplate(
                name=folder.name,
                title=about.get("template", folder.name),
                description=about.get("description", ""),
                documents=tuple(documents),
            )
        )
    return found


async def load_template(
    ingest: IngestDocument, principal: Principal, template: StarterTemplate
) -> list[str]:
    """Ingests the template's documents for ``principal`` (who needs ``kb:write``); returns
    their ids."""
    for doc in template.documents:
        await ingest(
            IngestCommand(
                principal=principal,
                title=doc.title,
                content=doc.content,
                content_type="markdown",
                source=doc.source,
                document_id=doc.id,
            )
        )
    return [doc.id for doc in template.documents]
