"""The render pipeline over HTTP: request a render, read its state, download its artifacts by
expiring signed link."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from application.render.use_cases import (
    DownloadArtifact,
    GetRender,
    LinkSigner,
    RenderCommand,
    RequestRender,
)
from domain.render.model import RenderJob, RenderState
from domain.tenancy.model import Principal
from entrypoints.http.inputs import json_body


class RenderIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    # "inline:<template>", "kb:<document id>" or "content:<ref>"
    template: str
    data: dict[str, Any] = {}
    formats: list[str] = msgspec.field(default_factory=lambda: ["markdown", "html"])
    id: str | None = None


class ArtifactOut(msgspec.Struct, rename="camel", kw_only=True):
    format: str
    url: str
    expires_at: int


class RenderOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    state: str
    template: str
    formats: list[str]
    attempts: int
    created_at_ms: int
    updated_at_ms: int
    error: str | None = None
    artifacts: list[ArtifactOut] = []


def render_out(job: RenderJob, links: LinkSigner) -> RenderOut:
    artifacts = []
    if job.state is RenderState.DONE:
        for fmt in job.artifacts:
            url, expires = links.link(job.tenant_id, job.id, fmt)
            artifacts.append(ArtifactOut(format=fmt, url=url, expires_at=expires))
    return RenderOut(
        id=job.id,
        state=job.state.value,
        template=job.template,
        formats=[f.value for f in job.formats],
        attempts=job.attempts,
        created_at_ms=job.created_at_ms,
        updated_at_ms=job.updated_at_ms,
        error=job.error,
        artifacts=artifacts,
    )


_render_in = msgspec.json.Decoder(RenderIn)


class RenderController(Controller):
    path = "/v1/renders"
    tags = ["renders"]

    @post(
        "/",
        summary="Render a template with data into Markdown, HTML or PDF",
        opt={"body": RenderIn},
    )
    @inject
    async def create(
        self,
        request: Request[Any, Any, Any],
        principal: FromDishka[Principal],
        render: FromDishka[RequestRender],
        links: FromDishka[LinkSigner],
    ) -> Response[RenderOut]:
        body = await json_body(request, _render_in)
        job = await render(
            RenderCommand(
                principal=principal,
                template=body.template,
                data=body.data,
                formats=body.formats,
                render_id=body.id,
            )
        )
        status = 201 if job.finished else 202
        return Response(
            render_out(job, links),
            status_code=status,
            headers={"Location": f"/v1/renders/{job.id}"},
        )

    @get("/{render_id:str}", summary="A render's state and, when done, its download links")
    @inject
    async def read(
        self,
        render_id: FromPath[str],
        principal: FromDishka[Principal],
        get_render: FromDishka[GetRender],
        links: FromDishka[LinkSigner],
    ) -> RenderOut:
        return render_out(await get_render(principal, render_id), links)


@get(
    "/v1/renders/{render_id:str}/artifacts/{fmt:str}",
    tags=["renders"],
    summary="Download an artifact by its signed link (no credentials needed until it expires)",
)
@inject
async def download_artifact(
    render_id: FromPath[str],
    fmt: FromPath[str],
    tenant: Annotated[str, QueryParameter()],
    expires: Annotated[int, QueryParameter()],
    signature: Annotated[str, QueryParameter()],
    download: FromDishka[DownloadArtifact],
) -> Response[bytes]:
    blob = await download(tenant, render_id, fmt, expires, signature)
    ext = {"markdown": "md"}.get(fmt, fmt)
    # The stored type may name its charset; the response adds one to text types itself.
    media_type, _, params = blob.content_type.partition(";")
    charset = params.strip().removeprefix("charset=") if "charset=" in params else "utf-8"
    return Response(
        blob.data,
        media_type=media_type.strip(),
        encoding=charset,
        headers={
            "Content-Disposition": f'attachment; filename="{render_id}.{ext}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
