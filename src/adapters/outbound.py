"""Outbound HTTP only to configured hosts (an SSRF guard). Every httpx client the composition
root builds talks to a known upstream (a model provider, BaseHub, an identity provider's keys,
an S3 endpoint, an embeddings endpoint); its transport refuses any other origin before a
socket is opened, and redirects are never followed, so neither a URL in a response nor a
redirect can point a request at the cloud metadata service or an internal address."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefused(httpx.TransportError):
    """A request to an origin this client was not configured for."""


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, lower-case host, port) of an absolute http(s) URL."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!s} is not an absolute http(s) URL")
    return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, allowed: Iterable[str], inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.allowed = frozenset(origin(u) for u in allowed if u)
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            target = origin(request.url)
        except ValueError as exc:
            raise OutboundRefused(str(exc), request=request) from exc
        if target not in self.allowed:
            scheme, host, port = target
            raise OutboundRefused(
                f"outbound request to {scheme}://{host}:{port} refused: not a configured host",
                request=request,
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(allowed: Iterable[str], *, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An httpx client that reaches only ``allowed`` origins (URLs; their path is ignored),
    with ``timeout`` and no redirect following."""
    return httpx.AsyncClient(
        timeout=timeout, transport=GuardedTransport(allowed), follow_redirects=False
    )
