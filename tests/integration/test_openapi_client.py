"""The OpenAPI document is complete enough to generate a client from: a Python client is
generated from it with openapi-python-client (from PyPI) and used to call the API; and the
/schema page works offline, its viewer served by the server from a pinned package."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_http_api import Api, make_api, parse_sse
from tests.support import unavailable

ADMIN = "admin-" + "z" * 40
PROBLEM = "application/problem+json"
BODIES = {
    ("post", "/v1/agents/{agent}/runs"),
    ("post", "/v1/kb/documents"),
    ("put", "/v1/kb/documents/{document_id}"),
    ("post", "/v1/renders"),
    ("post", "/admin/v1/tenants"),
    ("patch", "/admin/v1/tenants/{slug}"),
    ("post", "/admin/v1/tenants/{slug}/keys"),
}


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_AUTH__ADMIN_TOKEN=ADMIN):
        yield a


async def document(api: Api) -> dict[str, Any]:
    answer = await api.client.get("/schema/openapi.json")
    assert answer.status_code == 200
    return answer.json()


async def test_the_document_declares_bodies_credentials_problems_and_streams(api: Api) -> None:
    doc = await document(api)
    schemes = doc["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if path.startswith("/v1/") and "webhooks" not in path and "artifacts" not in path:
                assert op.get("security") == [{"apiKey": []}], where
            if path.startswith("/admin/"):
                assert op.get("security") == [{"adminToken": []}], where
            if (method, path) in BODIES:
                assert "requestBody" in op, where
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    assert list(answer["content"]) == [PROBLEM], (where, status)
    start = doc["paths"]["/v1/agents/{agent}/runs"]["post"]
    body = start["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RunAgentInput"}
    assert "messages" in doc["components"]["schemas"]["RunAgentInput"]["properties"]
    assert list(start["responses"]["200"]["content"]) == ["text/event-stream"]
    resume = doc["paths"]["/v1/runs/{run_id}/events"]["get"]
    assert list(resume["responses"]["200"]["content"]) == ["text/event-stream"]


def generate(doc: dict[str, Any], where: Path) -> Any:
    """The client openapi-python-client writes for ``doc``, imported as a package."""
    tool = Path(sys.executable).parent / "openapi-python-client"
    if not tool.exists():
        unavailable("openapi-python-client is not installed (pip install -e '.[dev]')")
    spec = where / "openapi.json"
    spec.write_text(json.dumps(doc))
    package = where / "sba_generated_client"
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(tool), "generate", "--path", str(spec), "--output-path", str(package)]
    done = subprocess.run(
        [*command, "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("sba_generated_client")
    finally:
        sys.path.remove(str(where))


async def test_a_generated_client_calls_the_api(api: Api, tmp_path) -> None:
    generated = generate(await document(api), tmp_path)
    try:
        await _calls(api, generated)
    finally:
        for name in [m for m in sys.modules if m.startswith("sba_generated_client")]:
            del sys.modules[name]
        shutil.rmtree(tmp_path / "sba_generated_client", ignore_errors=True)


async def _calls(api: Api, generated: Any) -> None:
    def module(name: str) -> Any:
        return importlib.import_module(f"sba_generated_client.{name}")

    models = module("models")
    transport = httpx.ASGITransport(app=api.client.app)  # type: ignore[arg-type]
    client = generated.AuthenticatedClient(
        base_url="http://sba.test", token=api.key, httpx_args={"transport": transport}
    )
    async with client:
        tools = await module("api.tools.v1_tools_list_tools").asyncio(client=client)
        assert "kb_search" in [t.name for t in tools.tools]

        new = models.DocumentIn(title="Generated", content="Made through a generated client.")
        create = module("api.knowledge_base.v1_kb_documents_create")
        made = await create.asyncio_detailed(client=client, body=new)
        assert made.status_code == 201 and made.parsed.title == "Generated"

        listing = module("api.knowledge_base.v1_kb_documents_list_documents")
        page = await listing.asyncio(client=client, limit=2)
        assert len(page.documents) == 2 and isinstance(page.next_cursor, str)

        found = await module("api.knowledge_base.v1_kb_search_search").asyncio(
            client=client, q="generated client"
        )
        assert found.results[0].title == "Generated"

        missing = await module("api.runs.v1_runs_run_id_get_run").asyncio_detailed(
            "no-such-run", client=client
        )
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem) and missing.parsed.code == "not_found"

        run = models.RunAgentInput(
            thread_id="gen-thread",
            run_id="gen-run",
            messages=[
                models.UserMessageIn(
                    id="m1", role=models.UserMessageInRole.USER, content="What can you do?"
                )
            ],
        )
        started = await module("api.runs.v1_agents_runs_start").asyncio_detailed(
            "assistant", client=client, body=run
        )
        assert started.status_code == 200
        assert started.headers["content-type"].startswith("text/event-stream")
        frames = parse_sse(started.content.decode())
        assert frames[0][1]["type"] == "RUN_STARTED" and frames[-1][1]["type"] == "RUN_FINISHED"

    anonymous = generated.Client(base_url="http://sba.test", httpx_args={"transport": transport})
    async with anonymous:
        refused = await module("api.tools.v1_tools_list_tools").asyncio_detailed(client=anonymous)
        assert refused.status_code == 401 and refused.parsed.code == "unauthenticated"


async def test_the_schema_page_loads_its_viewer_from_this_server(api: Api) -> None:
    page = await api.client.get("/schema")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert "cdn" not in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "https:" not in csp and "cdn" not in csp
    for asset in assets:
        fetched = await api.client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100
