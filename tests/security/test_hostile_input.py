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

from application.json_limits import MAX_JSON_DEPTH, json_too_deep
from entrypoints.http.inputs import decode_json
from tests.integration.test_http_api import Api, assert_problem, make_api, parse_sse, run_body

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
