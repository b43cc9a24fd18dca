"""HTTP hardening: security headers on every kind of response, CORS only for configured
origins, the body size limit, and outbound calls only to configured hosts (the SSRF guard)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.outbound import GuardedTransport, OutboundRefused, guarded_client
from entrypoints.http.hardening import API_CSP
from entrypoints.settings import SettingsError, load_settings
from tests.integration.test_http_api import Api, make_api, run_body

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
}


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    env = {"SBA_LLM__LOADTEST": "true", "SBA_HTTP__CORS_ORIGINS": '["https://app.example.com"]'}
    async for a in make_api(tmp_path, **env):
        yield a


def assert_hardened(response: httpx.Response, csp: str = API_CSP) -> None:
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["content-security-policy"] == csp
    assert "frame-ancestors 'none'" in csp


async def test_every_kind_of_response_carries_the_security_headers(api: Api) -> None:
    assert_hardened(await api.client.get("/healthz"))
    unauthenticated = await api.client.get("/v1/tools")
    assert unauthenticated.status_code == 401
    assert_hardened(unauthenticated)
    missing = await api.client.get("/v1/nothing-here", headers=api.auth())
    assert missing.status_code == 404
    assert_hardened(missing)
    stream = await api.run(run_body())
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert_hardened(stream)
    docs = await api.client.get("/schema")
    assert docs.status_code == 200
    # The reference page loads only what this server serves (ADR 0042).
    assert "https:" not in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


async def test_cors_answers_only_the_configured_origin(api: Api) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-tenant-id",
    }
    ok = await api.client.options(
        "/v1/agents/assistant/runs", headers={"Origin": "https://app.example.com", **preflight}
    )
    assert ok.status_code in (200, 204)
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "x-tenant-id" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    evil = await api.client.options(
        "/v1/agents/assistant/runs", headers={"Origin": "https://evil.example", **preflight}
    )
    assert evil.headers.get("access-control-allow-origin") != "https://evil.example"
    assert "access-control-allow-origin" not in evil.headers or evil.status_code >= 400

    real = await api.client.get(
        "/v1/tools", headers={**api.auth(), "Origin": "https://app.example.com"}
    )
    assert real.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "retry-after" in real.headers["access-control-expose-headers"].lower()
    other = await api.client.get("/v1/tools", headers={**api.auth(), "Origin": "https://x.io"})
    assert "access-control-allow-origin" not in other.headers


async def test_without_configured_origins_there_is_no_cors(tmp_path) -> None:
    async for api in make_api(tmp_path):
        r = await api.client.get(
            "/v1/tools", headers={**api.auth(), "Origin": "https://app.example.com"}
        )
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "origins", ['["*"]', '["https://app.example.com/path"]', '["app.example.com"]', '["ftp://x"]']
)
def test_cors_origins_that_are_not_origins_stop_start_up(origins) -> None:
    with pytest.raises(SettingsError, match="SBA_HTTP__CORS_ORIGINS"):
        load_settings({"SBA_HTTP__CORS_ORIGINS": origins})


async def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path) -> None:
    async for api in make_api(tmp_path, SBA_HTTP__MAX_BODY_BYTES="2000"):
        body = {"title": "Big", "content": "x" * 5000}
        r = await api.client.post("/v1/kb/documents", json=body, headers=api.auth())
        assert r.status_code == 413
        assert_hardened(r)


# --- outbound: only configured hosts ------------------------------------------------------


async def serve_once() -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        location = b"http://169.254.169.254/latest/meta-data/"
        writer.write(
            b"HTTP/1.1 302 Found\r\nlocation: " + location + b"\r\ncontent-length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_the_guard_lets_through_only_configured_origins_and_follows_no_redirect() -> None:
    server, port, seen = await serve_once()
    try:
        async with guarded_client(
            [f"http://127.0.0.1:{port}/graphql"], timeout=httpx.Timeout(2.0)
        ) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/anything")
            assert answer.status_code == 302  # returned as is, not followed
            assert len(seen) == 1
            for url in (
                "http://169.254.169.254/latest/meta-data/",
                f"https://127.0.0.1:{port}/",  # another scheme
                f"http://127.0.0.1:{port + 1}/",  # another port
                "http://localhost/",
            ):
                with pytest.raises(OutboundRefused, match="not a configured host"):
                    await client.get(url)
            assert len(seen) == 1  # nothing refused reached a socket
    finally:
        server.close()
        await server.wait_closed()


def test_the_guard_compares_origins_not_strings() -> None:
    guard = GuardedTransport(["https://API.example.com/v1", "http://h:8080"])
    assert guard.allowed == {("https", "api.example.com", 443), ("http", "h", 8080)}
    with pytest.raises(ValueError, match="absolute http"):
        GuardedTransport(["file:///etc/passwd"])


async def test_the_containers_clients_are_guarded(tmp_path) -> None:
    from entrypoints.ioc.container import make_container
    from entrypoints.ioc.jobs import ContentClient

    env = {
        "SBA_DATA_DIR": str(tmp_path),
        "SBA_CONTENT__TENANTS": '{"demo": {"kind": "basehub", "token": "t", '
        '"endpoint": "https://api.basehub.com/graphql"}}',
    }
    container = make_container(load_settings(env))
    try:
        client = await container.get(ContentClient)
        with pytest.raises(OutboundRefused):
            await client.get("http://169.254.169.254/latest/meta-data/")
        assert isinstance(client._transport, GuardedTransport)
        assert client._transport.allowed == {("https", "api.basehub.com", 443)}
        assert client.follow_redirects is False
    finally:
        await container.close()
