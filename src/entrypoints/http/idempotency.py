"""``Idempotency-Key`` on mutating requests, with Stripe's semantics: the same key and the same
request get the stored response (marked ``Idempotent-Replayed: true``); the same key with a
different request is a 422; the same request while the first is still running is a 409.

Keys belong to the principal that sent them. A request that failed with a server error (or
was refused before it ran: 401, 403, 429) keeps no outcome, so it may be retried with the same
key. Starting an AG-UI run is exempt: its ``runId`` already makes it idempotent."""

from __future__ import annotations

import hashlib
from typing import Any, cast

from litestar import Request
from litestar.datastructures import Headers
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from application.errors import Conflict, InvalidInput
from application.ports import ClaimOutcome, IdempotencyStore, StoredResponse
from domain.tenancy.model import Principal
from entrypoints.settings import Settings

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Refused before they ran: retrying them with the same key must run them.
_NOT_KEPT = frozenset({401, 403, 408, 425, 429})
# Headers that describe this answer's moment, not the outcome.
_VOLATILE = frozenset({b"date", b"content-length", b"ratelimit", b"ratelimit-policy", b"server"})


def _check_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID is typical)",
            code="invalid_idempotency_key",
        )
    return key


def fingerprint(method: str, path: str, query: bytes, content_type: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, content_type.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        method = cast("HTTPScope", scope)["method"] if scope["type"] == "http" else ""
        if method not in MUTATING:
            await app(scope, receive, send)
            return
        headers = Headers.from_scope(scope)
        raw_key = headers.get("idempotency-key")
        handler = scope.get("route_handler")
        exempt = handler is not None and handler.opt.get("idempotency") in ("run_id", "exempt")
        if raw_key is None or exempt:
            await app(scope, receive, send)
            return
        key = _check_key(raw_key.strip())
        container = scope["state"]["dishka_container"]
        principal = await container.get(Principal)
        store = await container.get(IdempotencyStore)
        settings = await container.get(Settings)
        request: Request[Any, Any, Any] = Request(scope, receive)
        body = await request.body()
        fp = fingerprint(
            method,
            scope["path"],
            scope.get("query_string", b""),
            headers.get("content-type", ""),
            body,
        )
        owner = f"{principal.tenant_id}:{principal.subject}"
        cfg = settings.idempotency
        claim = await store.claim(owner, key, fp, lock_s=cfg.lock_s)
        if claim.outcome is ClaimOutcome.MISMATCH:
            raise InvalidInput(
                "this Idempotency-Key was already used for a different request",
                code="idempotency_key_reused",
            )
        if claim.outcome is ClaimOutcome.IN_FLIGHT:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed; retry later",
                code="idempotency_in_flight",
            )
        if claim.outcome is ClaimOutcome.REPLAY:
            assert claim.response is not None
            await _replay(claim.response, send)
            return

        status = 0
        kept: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() not in _VOLATILE:
                        kept.append((name.decode("latin-1"), value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                part = message.get("body", b"")
                size += len(part)
                if size <= cfg.max_response_bytes:
                    chunks.append(part)
            await send(message)

        try:
            await app(scope, receive, capture)
        except BaseException:
            await store.release(owner, key, fp)
            raise
        if status >= 500 or status in _NOT_KEPT or size > cfg.max_response_bytes or not status:
            await store.release(owner, key, fp)
            return
        response = StoredResponse(status=status, headers=tuple(kept), body=b"".join(chunks))
        await store.complete(owner, key, fp, response, retention_s=cfg.retention_s)

    return middleware


async def _replay(response: StoredResponse, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers += [
        (b"content-length", str(len(response.body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
