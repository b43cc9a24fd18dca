"""The tools a tenant may use."""

from __future__ import annotations

from typing import Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import get

from application.tools.use_cases import ListTools
from domain.tenancy.model import Principal


class ToolOut(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: dict[str, Any]


class ToolsOut(msgspec.Struct, kw_only=True):
    tools: list[ToolOut]


@get("/v1/tools", tags=["tools"], summary="The backend tools this tenant may use, with schemas")
@inject
async def list_tools(principal: FromDishka[Principal], tools: FromDishka[ListTools]) -> ToolsOut:
    return ToolsOut(
        tools=[
            ToolOut(name=t.name, description=t.description, parameters=dict(t.parameters))
            for t in tools(principal.tenant_slug)
        ]
    )
