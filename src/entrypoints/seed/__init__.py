"""The demo tenant's starting knowledge base, shipped with the package."""

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
