"""Threads as resources: the tenant's conversations listed, read, renamed and deleted."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, delete, get, patch
from litestar.params import FromPath, QueryParameter

from application.conversation.threads import DeleteThread, GetThread, ListThreads, RenameThread
from application.pagination import MAX_LIMIT
from domain.conversation.threads import ThreadSummary
from domain.tenancy.model import Principal
from entrypoints.http.inputs import json_body


class ThreadOut(msgspec.Struct, rename="camel", kw_only=True):
    """``title``: the name a person gave the thread (``named``), else its first user message
    on one line, cut to 80 characters. ``lastActivityAtMs``: the latest start or end of one of
    its runs."""

    id: str
    title: str
    named: bool
    run_count: int
    created_at_ms: int
    last_activity_at_ms: int

    @classmethod
    def of(cls, s: ThreadSummary) -> ThreadOut:
        return cls(
            id=s.id,
            title=s.title,
            named=s.named,
            run_count=s.run_count,
            created_at_ms=s.created_at_ms,
            last_activity_at_ms=s.last_activity_ms,
        )


class ThreadsOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Newest first; ``nextCursor`` (absent on the last page) asks for the next page."""

    threads: list[ThreadOut]
    next_cursor: str | None = None


class ThreadPatchIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """``title``: 1 to 200 characters on one line; null gives the thread back its derived
    title."""

    title: str | None


_thread_patch = msgspec.json.Decoder(ThreadPatchIn)


class ThreadController(Controller):
    path = "/v1/threads"
    tags = ["threads"]

    @get("/", summary="The tenant's threads, newest first, a page at a time")
    @inject
    async def list_threads(
        self,
        principal: FromDishka[Principal],
        threads: FromDishka[ListThreads],
        limit: Annotated[
            int | None, QueryParameter(ge=1, le=MAX_LIMIT, description="at most this many (100)")
        ] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="the nextCursor of the page before")
        ] = None,
    ) -> ThreadsOut:
        page = await threads(principal, limit=limit, cursor=cursor)
        return ThreadsOut(
            threads=[ThreadOut.of(s) for s in page.items], next_cursor=page.next_cursor
        )

    @get("/{thread_id:str}", summary="A thread: its title, run count and last activity")
    @inject
    async def get_thread(
        self,
        thread_id: FromPath[str],
        principal: FromDishka[Principal],
        get_thread: FromDishka[GetThread],
    ) -> ThreadOut:
        return ThreadOut.of(await get_thread(principal, thread_id))

    @patch(
        "/{thread_id:str}",
        summary="Rename a thread",
        opt={"body": ThreadPatchIn},
    )
    @inject
    async def rename_thread(
        self,
        request: Request[Any, Any, Any],
        thread_id: FromPath[str],
        principal: FromDishka[Principal],
        rename: FromDishka[RenameThread],
    ) -> ThreadOut:
        body = await json_body(request, _thread_patch)
        return ThreadOut.of(await rename(principal, thread_id, body.title))

    @delete(
        "/{thread_id:str}",
        status_code=204,
        summary="Delete a thread with its runs and messages",
        description="Refused (409 `thread_busy`) while one of its runs is in progress. The "
        "tokens its runs used stay in the tenant's usage.",
    )
    @inject
    async def delete_thread(
        self,
        thread_id: FromPath[str],
        principal: FromDishka[Principal],
        delete_thread: FromDishka[DeleteThread],
    ) -> None:
        await delete_thread(principal, thread_id)
