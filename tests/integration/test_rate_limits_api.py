"""Rate limits over HTTP, on the in-memory limiter and on Redis: route classes, tenant,
principal and client-address counters, plans, the IETF RateLimit headers and 429 problems."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest

from entrypoints.settings import SettingsError, load_settings
from tests.integration.test_http_api import Api, assert_problem, make_api, run_body
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

KINDS = ["memory", "redis"]


async def limited_api(tmp_path, kind: str, **env: str) -> AsyncIterator[Api]:
    prefix = new_prefix()
    if kind == "redis":
        require_redis()
        env = {**env, "SBA_REDIS_URL": REDIS_URL, "SBA_REDIS__KEY_PREFIX": prefix}
    try:
        own = kind == "redis"
        async for api in make_api(tmp_path, own_setup=own, SBA_LLM__LOADTEST="true", **env):
            yield api
    finally:
        if kind == "redis":
            await drop_prefix(REDIS_URL, prefix)


async def get_status(api: Api, key: str | None = None) -> int:
    return (await api.client.get("/v1/runs/none", headers=api.auth(key))).status_code


@pytest.mark.parametrize("kind", KINDS)
async def test_answers_carry_ratelimit_headers_and_a_429_says_when_to_retry(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path, kind, SBA_RATE_LIMIT__DEFAULT_PER_MINUTE="5", SBA_RATE_LIMIT__BURST_RATIO="0.4"
    ):
        first = await api.client.get("/v1/runs/none", headers=api.auth())
        assert first.status_code == 404
        assert first.headers["ratelimit-policy"] == '"tenant";q=5;w=60'
        assert re.fullmatch(r'"tenant";r=1;t=\d+', first.headers["ratelimit"])
        assert await get_status(api) == 404
        limited = await api.client.get("/v1/runs/none", headers=api.auth())
        assert_problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 12
        assert re.fullmatch(r'"tenant";r=0;t=\d+', limited.headers["ratelimit"])


@pytest.mark.parametrize("kind", KINDS)
async def test_starting_runs_has_its_own_limit_apart_from_reads(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__ROUTES=json.dumps({"runs": 5}),
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
    ):
        assert (await api.run(run_body("r1"))).status_code == 200
        assert (await api.run(run_body("r2"))).status_code == 200
        assert_problem(await api.run(run_body("r3")), 429, "rate_limited")
        assert [await get_status(api) for _ in range(5)] == [404] * 5


@pytest.mark.parametrize("kind", KINDS)
async def test_a_started_run_answers_with_its_own_limits_headers(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__ROUTES=json.dumps({"runs": 5}),
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
        SBA_RATE_LIMIT__CONCURRENT_RUNS="4",
    ):
        started = await api.run(run_body("r1"))
        assert started.status_code == 200
        assert started.headers["ratelimit-policy"] == '"tenant";q=5;w=60'
        assert re.fullmatch(r'"tenant";r=1;t=\d+', started.headers["ratelimit"])
        # A retry of the same run is counted too, and says so.
        again = await api.run(run_body("r1"))
        assert again.status_code == 200
        assert re.fullmatch(r'"tenant";r=0;t=\d+', again.headers["ratelimit"])
        limited = await api.run(run_body("r2"))
        assert_problem(limited, 429, "rate_limited")
        assert limited.headers["ratelimit"].startswith('"tenant";r=0')


@pytest.mark.parametrize("kind", KINDS)
async def test_one_key_at_its_limit_leaves_the_tenants_other_keys_alone(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__PRINCIPAL_PER_MINUTE="5",
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
    ):
        other = await api.key_for("demo")
        assert [await get_status(api) for _ in range(3)] == [404, 404, 429]
        limited = await api.client.get("/v1/runs/none", headers=api.auth())
        assert '"key";q=5;w=60' in limited.headers["ratelimit-policy"]
        assert limited.headers["ratelimit"].startswith('"key";r=0')
        assert [await get_status(api, other) for _ in range(2)] == [404, 404]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_address_is_limited_before_it_authenticates(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__ADDRESS_PER_MINUTE="5",
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
    ):
        guesses = [await get_status(api, "sba_wrong_guess") for _ in range(3)]
        assert guesses == [401, 401, 429]
        # The address is spent: even a valid key from it waits.
        assert await get_status(api) == 429


@pytest.mark.parametrize("kind", KINDS)
async def test_the_address_comes_from_the_configured_proxy_header(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__ADDRESS_PER_MINUTE="5",
        SBA_RATE_LIMIT__BURST_RATIO="0.2",
        SBA_RATE_LIMIT__CLIENT_ADDRESS_HEADER="X-Forwarded-For",
    ):

        async def from_(address: str, api: Api = api) -> int:
            headers = {**api.auth(), "X-Forwarded-For": f"6.6.6.6, {address}"}
            return (await api.client.get("/v1/runs/none", headers=headers)).status_code

        assert [await from_("10.0.0.1") for _ in range(2)] == [404, 429]
        assert await from_("10.0.0.2") == 404


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tenant_on_a_plan_gets_that_plans_limits(tmp_path, kind) -> None:
    async for api in limited_api(
        tmp_path,
        kind,
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
        SBA_RATE_LIMIT__PLANS=json.dumps({"trial": {"per_minute": 5}}),
        SBA_RATE_LIMIT__TENANTS=json.dumps({"acme": "trial"}),
    ):
        acme = await api.key_for("acme")
        assert [await get_status(api, acme) for _ in range(3)] == [404, 404, 429]
        assert [await get_status(api) for _ in range(3)] == [404, 404, 404]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SBA_RATE_LIMIT__ROUTES", '{"run": 5}', "unknown route class"),
        ("SBA_RATE_LIMIT__TENANTS", '{"acme": "gold"}', "not defined"),
        ("SBA_RATE_LIMIT__BURST_RATIO", "0", "burst_ratio"),
        ("SBA_RATE_LIMIT__FAIL_MODE", "maybe", "FAIL_MODE"),
        ("SBA_REDIS__KEY_PREFIX", "a{b}", "braces"),
    ],
)
async def test_bad_limit_settings_stop_start_up_naming_the_setting(
    tmp_path, name, value, message
) -> None:
    env = {name: value}
    if name.startswith("SBA_REDIS"):
        env["SBA_REDIS_URL"] = REDIS_URL
    with pytest.raises(SettingsError, match=message):
        async for _ in make_api(tmp_path, **env):
            pass


def test_the_redis_url_is_read_from_sba_redis_url() -> None:
    settings = load_settings({"SBA_REDIS_URL": "rediss://u:p@cache.example:6380/0"})
    assert settings.redis_url == "rediss://u:p@cache.example:6380/0"
