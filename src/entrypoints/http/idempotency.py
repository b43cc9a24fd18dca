"""``Idempotency-Key`` on mutating requests, with Stripe's semantics: the same key and the same
request get the stored response (marked ``Idempotent-Replayed: true``); the same key with a
different request is a 422; the same request while the first is still running is a 409.

The answer is stored before it is sent, so a retry that follows it at once replays it. Keys
belong to the principal that sent them. A request that failed with a server error (or
was refused before it ran: 401, 403, 429) keeps no outcome, so it may be retried with the same
key. Starting an AG-UI run is exempt: its ``runId`` already makes it idempotent."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, cast

from litestar import Request
from litestar.datastructures import Headers
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from application.errors import Conflict, InvalidInput, ServiceUnavailable
from application.ports import ClaimOutcome, IdempotencyStore, StoredResponse
from domain.tenancy.model import Principal
from entrypoints.http.sse import DETACH_KEY
from entrypoints.settings import Settings

log = logging.getLogger("sba.http")

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
        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get("idempotency") in ("run_id", "exempt"):
            # Passed on without a header object: this frame lives as long as the answer does,
            # and a run's answer is a stream held for minutes.
            await app(scope, receive, send)
            return
        headers = Headers.from_scope(scope)
        raw_key = headers.get("idempotency-key")
        if raw_key is None:
            del headers
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

        # The answer is held back until it is stored, so that a retry sent the moment the
        # client has it finds it replayable, never still in flight. Only an answer too large to
        # keep is passed on as it comes (and its key released).
        # Every message of it passes here, a stream's body included (see ``detachable``).
        scope.pop(DETACH_KEY, None)  # type: ignore[misc]
        held: list[Message] = []
        status = 0
        size = 0
        passing = False

        async def hold(message: Message) -> None:
            nonlocal status, size, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if size > cfg.max_response_bytes:
                    passing = True
                    await store.release(owner, key, fp)
                    for early in held:
                        await send(early)
                    held.clear()
                    await send(message)
                    return
            held.append(message)

        try:
            await app(scope, receive, hold)
        except BaseException:
            if not passing:
                await store.release(owner, key, fp)
            raise
        if passing:
            return
        if status and status < 500 and status not in _NOT_KEPT:
            response = _stored(held)
            try:
                await store.complete(owner, key, fp, response, retention_s=cfg.retention_s)
            except ServiceUnavailable:
                # The work is done and its answer must reach the client; a retry meets the
                # key in flight until its lock lapses, and then runs again.
                log.warning("an idempotent answer could not be stored (key %s)", key)
        else:
            await store.release(owner, key, fp)
        for message in held:
            await send(message)

    return middleware


def _stored(messages: list[Message]) -> StoredResponse:
    status = 0
    kept: list[tuple[str, str]] = []
    body: list[bytes] = []
    for message in messages:
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() not in _VOLATILE:
                    kept.append((name.decode("latin-1"), value.decode("latin-1")))
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
    return StoredResponse(status=status, headers=tuple(kept), body=b"".join(body))


async def _replay(response: StoredResponse, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers += [
        (b"content-length", str(len(response.body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
