"""Webhooks from content sources."""

from __future__ import annotations

from typing import Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Request, post
from litestar.params import FromPath

from application.content.use_cases import HandleContentWebhook

SIGNATURE_HEADER = "x-basehub-webhook-signature"


class WebhookOut(msgspec.Struct, kw_only=True):
    refs: list[str]
    invalidated: int
    enqueued: int


@post(
    "/v1/webhooks/basehub/{tenant_slug:str}",
    tags=["content"],
    summary="BaseHub change notification, signed with the tenant's webhook secret",
    status_code=202,
    # Signed, not authenticated by key; deliveries are made idempotent by the replay check.
    opt={"idempotency": "exempt"},
)
@inject
async def basehub_webhook(
    request: Request[Any, Any, Any],
    tenant_slug: FromPath[str],
    handle: FromDishka[HandleContentWebhook],
) -> WebhookOut:
    # The signature covers the raw bytes: the body is read as sent, never re-encoded.
    body = await request.body()
    done = await handle(tenant_slug, body, request.headers.get(SIGNATURE_HEADER))
    return WebhookOut(refs=list(done.refs), invalidated=done.invalidated, enqueued=done.enqueued)
