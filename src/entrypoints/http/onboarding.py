"""Starter templates over HTTP: what a new workspace may load into its knowledge base (the
first-start page offers them), and loading one."""

from __future__ import annotations

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, get, post
from litestar.params import FromPath

from application.errors import NotFound
from application.knowledge.use_cases import IngestDocument
from domain.tenancy.model import Principal
from entrypoints.seed import StarterTemplate, load_template, starter_templates


class TemplateDocumentOut(msgspec.Struct, kw_only=True):
    id: str
    title: str


class TemplateOut(msgspec.Struct, kw_only=True):
    name: str
    title: str
    description: str
    documents: list[TemplateDocumentOut]

    @classmethod
    def of(cls, t: StarterTemplate) -> TemplateOut:
        return cls(
            name=t.name,
            title=t.title,
            description=t.description,
            documents=[TemplateDocumentOut(id=d.id, title=d.title) for d in t.documents],
        )


class TemplatesOut(msgspec.Struct, kw_only=True):
    templates: list[TemplateOut]


class TemplateController(Controller):
    path = "/v1/kb/templates"
    tags = ["knowledge base"]

    @get("/", summary="Starter templates: documents and render templates a workspace may load")
    @inject
    async def list_templates(self, principal: FromDishka[Principal]) -> TemplatesOut:
        return TemplatesOut(templates=[TemplateOut.of(t) for t in starter_templates()])

    @post(
        "/{name:str}",
        status_code=200,
        summary="Load a starter template's documents into the knowledge base",
        description="Needs kb:write. Loading a template again replaces its documents.",
    )
    @inject
    async def load(
        self,
        name: FromPath[str],
        principal: FromDishka[Principal],
        ingest: FromDishka[IngestDocument],
    ) -> TemplateOut:
        template = next((t for t in starter_templates() if t.name == name), None)
        if template is None:
            raise NotFound(f"no starter template {name}")
        await load_template(ingest, principal, template)
        return TemplateOut.of(template)
