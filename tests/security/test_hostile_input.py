"""What a hostile client sends to the HTTP API: bodies nested far deeper than any real client
would. Each gets a clear problem answer, never a 500, and the limit is the same everywhere."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from adapters.redis.client import RedisStore, create_client
from adapters.scope import TenantScope
from application.errors import ServiceUnavailable
from application.json_limits import MAX_JSON_DEPTH, json_too_deep
from domain.ids import TenantId
from entrypoints.http.app import create_app
from entrypoints.http.inputs import decode_json
from entrypoints.settings import load_settings
from tests.db import sql_database
from tests.integration.test_http_api import Api, assert_problem, make_api, parse_sse, run_body
from tests.pg import ADMIN_DSN, _url
from tests.redis_support import REDIS_URL, new_prefix, require_redis
from tests.security.test_api_attacks import database_env, open_api  # noqa: F401 - fixture

ADMIN = "admin-token-for-tests"


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_AUTH__ADMIN_TOKEN=ADMIN):
        yield a


def nested(depth: int) -> str:
    """JSON text of ``depth`` arrays and objects inside one another (depth 0: a number)."""
    opening = "".join('{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return f"{opening}1{closing}"


def body_with(template: dict[str, Any], depth: int) -> bytes:
    """``template`` as JSON, its ``"@"`` string replaced by a value ``depth`` deep."""
    return json.dumps(template).replace('"@"', nested(depth)).encode()


async def post(api: Api, path: str, body: bytes, *, admin: bool = False):
    auth = {"Authorization": f"Bearer {ADMIN}"} if admin else api.auth()
    return await api.client.post(
        path, content=body, headers={**auth, "Content-Type": "application/json"}
    )


RUN = "/v1/agents/assistant/runs"
# Every route that takes a JSON body, with a place for an arbitrarily deep value; its depth
# as a whole is the value's plus the levels around it.
BODIES = [
    pytest.param(RUN, run_body(state="@"), 1, False, id="run-state"),
    pytest.param(RUN, run_body(forwardedProps={"x": "@"}), 2, False, id="run-forwarded-props"),
    pytest.param(
        RUN,
        {**run_body(), "messages": [{"id": "m", "role": "user", "content": "hi", "extra": "@"}]},
        3,
        False,
        id="run-unknown-message-field",
    ),
    pytest.param(
        "/v1/renders", {"template": "inline:x", "data": {"d": "@"}}, 2, False, id="render"
    ),
    pytest.param(
        "/v1/kb/documents", {"title": "t", "content": "c", "metadata": "@"}, 1, False, id="kb"
    ),
    pytest.param("/admin/v1/tenants", {"slug": "deep", "tools": "@"}, 1, True, id="admin"),
]


@pytest.mark.parametrize(("path", "template", "around", "admin"), BODIES)
async def test_ten_thousand_levels_of_nesting_is_a_400_problem_on_every_json_route(
    api: Api, path: str, template: dict[str, Any], around: int, admin: bool
) -> None:
    response = await post(api, path, body_with(template, 10_000), admin=admin)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_run_whose_state_nests_ten_thousand_deep_is_refused_as_too_deep(api: Api) -> None:
    body = assert_problem(
        await post(api, RUN, body_with(run_body(state="@"), 10_000)), 400, "json_too_deep"
    )
    assert str(MAX_JSON_DEPTH) in body["detail"]
    forwarded = body_with(run_body(forwardedProps="@"), 5_000)
    assert_problem(await post(api, RUN, forwarded), 400, "json_too_deep")


@pytest.mark.parametrize(
    ("path", "template", "around", "admin"), [p for p in BODIES if p.id in ("run-state", "render")]
)
async def test_a_body_at_the_limit_is_taken_and_one_level_more_is_refused(
    api: Api, path: str, template: dict[str, Any], around: int, admin: bool
) -> None:
    at_limit = await post(api, path, body_with(template, MAX_JSON_DEPTH - around), admin=admin)
    assert at_limit.status_code < 300, at_limit.text
    beyond = await post(api, path, body_with(template, MAX_JSON_DEPTH - around + 1), admin=admin)
    assert_problem(beyond, 400, "json_too_deep")


async def test_tool_arguments_nested_too_deep_come_back_to_the_model_as_invalid(api: Api) -> None:
    for depth in (MAX_JSON_DEPTH, 5_000):
        arguments = json.dumps({"template": "inline:x", "data": {"d": "@"}})
        arguments = arguments.replace('"@"', nested(depth))
        text = f"/tool render_document {arguments}"
        frames = parse_sse((await api.run(run_body(f"deep{depth}", f"t{depth}", text))).text)
        results = [d for _, d in frames if d["type"] == "TOOL_CALL_RESULT"]
        assert json.loads(results[0]["content"])["error"] == "invalid_arguments", results
        assert frames[-1][1]["type"] == "RUN_FINISHED"


class _Loose(msgspec.Struct):
    value: Any = None


@given(depth=st.integers(min_value=0, max_value=3 * MAX_JSON_DEPTH))
def test_decoding_accepts_exactly_the_values_within_the_limit(depth: int) -> None:
    raw = f'{{"value": {nested(depth)}}}'.encode()
    decoder = msgspec.json.Decoder(_Loose)
    if depth + 1 <= MAX_JSON_DEPTH:
        assert decode_json(decoder, raw).value == json.loads(nested(depth))
    else:
        with pytest.raises(Exception, match="levels deep") as refused:
            decode_json(decoder, raw)
        assert getattr(refused.value, "code", None) == "json_too_deep"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=30,
)


@given(value=json_values, limit=st.integers(min_value=0, max_value=8))
def test_the_depth_check_agrees_with_the_depth_of_any_value(value: Any, limit: int) -> None:
    assert json_too_deep(value, limit) == (_depth(value) > limit)


# What must never reach a client: the database's words, statements, parameters, file paths.
LEAKS = (
    "[sql:",
    "[parameters:",
    "select ",
    "insert into",
    "sqlalchemy",
    "asyncpg",
    "sqlite",
    "0x00",
    "sqlalche.me",
)


def assert_clean(response, status: int, code: str, *secrets: str) -> None:
    body = assert_problem(response, status, code)
    text = response.text.lower()
    for leak in (*LEAKS, *(s.lower() for s in secrets)):
        assert leak not in text, (leak, body)


async def test_a_nul_character_is_refused_alike_on_sqlite_and_postgres(
    database_env: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    async for api, _ in open_api(database_env):
        h = api.auth()
        document = {"title": "t", "content": "before\u0000after"}
        answer = await api.client.post("/v1/kb/documents", json=document, headers=h)
        assert_clean(answer, 422, "validation_failed", "before")
        assert "content" in answer.json()["detail"]
        renamed = await api.client.post(
            "/v1/kb/documents",
            json={"title": "t", "content": "c", "metadata": {"k\u0000": "v"}},
            headers=h,
        )
        assert_clean(renamed, 422, "validation_failed")
        assert_clean(await api.run(run_body(text="hi\u0000there")), 422, "validation_failed")
        assert_clean(await api.run(run_body(thread_id="t\u0000")), 422, "validation_failed")
        for method, path in [
            ("GET", "/v1/kb/documents/doc%00x"),
            ("PUT", "/v1/kb/documents/doc%00x"),
            ("DELETE", "/v1/kb/documents/doc%00x"),
            ("GET", "/v1/runs/r%00/events"),
            ("GET", "/v1/runs/r%00"),
            ("DELETE", "/v1/runs/r%00"),
            ("GET", "/v1/threads/t%00/messages"),
            ("GET", "/v1/renders/x%00"),
        ]:
            sent = await api.client.request(
                method, path, headers=h, json={"title": "t", "content": "c"}
            )
            assert_clean(sent, 404, "not_found")
        searched = await api.client.get("/v1/kb/search?q=refund%00policy", headers=h)
        assert_clean(searched, 422, "validation_failed", "refund")
        # What was refused left nothing behind.
        listed = (await api.client.get("/v1/kb/documents", headers=h)).json()["documents"]
        assert all("\u0000" not in d["title"] for d in listed)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_unreachable_database_answers_503_without_its_error(
    kind, request, tmp_path
) -> None:
    if kind == "postgres":
        request.getfixturevalue("pg_template")
        url = _url(ADMIN_DSN, "sba_no_such_database_for_tests")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/missing-folder/secret-name.db"
    app = create_app(load_settings({"SBA_DATA_DIR": str(tmp_path), "SBA_DATABASE_URL": url}))
    async with AsyncTestClient(app) as client:
        headers = {"Authorization": "Bearer sba_0123456789ab_secret-part-of-a-key"}
        answer = await client.get("/v1/kb/documents", headers=headers)
        assert_clean(answer, 503, "service_unavailable", "no_such_database", "secret-name")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_driver_error_leaves_the_adapter_without_its_statement_or_parameters(
    kind, request, tmp_path, caplog
) -> None:
    async with sql_database(kind, request, tmp_path) as db:
        with pytest.raises(ServiceUnavailable) as refused:
            async with db.connect(TenantScope(TenantId("tenant-7"))) as conn:
                statement = text("SELECT * FROM no_such_table WHERE x = :v")
                await conn.execute(statement, {"v": "param-secret"})
    message = refused.value.message.lower()
    for leak in ("no_such_table", "param-secret", "tenant-7", *LEAKS):
        assert leak not in message
    # The operator still learns what failed, without the parameters.
    assert "no_such_table" in caplog.text
    assert "param-secret" not in caplog.text


async def test_a_redis_refusal_leaves_the_adapter_without_the_servers_words(caplog) -> None:
    require_redis()
    store = RedisStore(create_client(REDIS_URL), prefix=new_prefix())
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await store.run(
                "probe", lambda: store.client.execute_command("NOSUCHCOMMAND", "tenant-secret")
            )
    finally:
        await store.client.aclose()
    assert "tenant-secret" not in refused.value.message
    assert "NOSUCHCOMMAND" not in refused.value.message
    assert "tenant-secret" in caplog.text  # the operator still learns what was refused
