from __future__ import annotations

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import get
from litestar.response import Response

from application.errors import ApplicationError
from application.ports import UnitOfWork


class Health(msgspec.Struct):
    status: str


@get("/healthz", tags=["ops"], summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", tags=["ops"], summary="The process can reach its database")
@inject
async def readyz(uow: FromDishka[UnitOfWork]) -> Response[Health]:
    try:
        await uow.ping()
    except ApplicationError:
        return Response(Health(status="unavailable"), status_code=503)
    return Response(Health(status="ready"))
