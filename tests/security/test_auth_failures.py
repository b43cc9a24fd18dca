"""Guessing credentials: failed authentications are held to a low limit of their own, per client
address and per API-key prefix, under the default settings, on memory and on Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.rate_limiter import MemoryRateLimiter
from application.errors import RateLimited
from application.quota.auth_failures import AuthFailureLimit
from domain.tenancy.model import split_api_key
from tests.integration.test_http_api import Api, assert_problem
from tests.integration.test_rate_limits_api import limited_api

DEFAULT_LIMIT = 10  # SBA_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE and …_PER_KEY_PER_MINUTE


@pytest.fixture(params=["memory", "redis"])
async def api(request, tmp_path) -> AsyncIterator[Api]:
    async for a in limited_api(
        tmp_path, request.param, SBA_RATE_LIMIT__CLIENT_ADDRESS_HEADER="X-Forwarded-For"
    ):
        yield a


def guess() -> str:
    return f"sba_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def get_from(api: Api, address: str, key: str):
    headers = {**api.auth(key), "X-Forwarded-For": address}
    return await api.client.get("/v1/tools", headers=headers)


async def test_bad_key_guesses_from_one_address_are_limited_under_the_defaults(api: Api) -> None:
    answers = [(await get_from(api, "203.0.113.7", guess())).status_code for _ in range(40)]
    assert answers[:DEFAULT_LIMIT] == [401] * DEFAULT_LIMIT
    assert set(answers[DEFAULT_LIMIT:]) == {429}
    refused = await get_from(api, "203.0.113.7", guess())
    body = assert_problem(refused, 429, "authentication_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "failed authentications" in body["detail"]
    # While refused, even the right key from that address is not looked at: a right guess
    # must not be told from a wrong one.
    assert (await get_from(api, "203.0.113.7", api.key)).status_code == 429
    # Other addresses are not held to it.
    assert (await get_from(api, "198.51.100.2", api.key)).status_code == 200
    assert (await get_from(api, "198.51.100.3", guess())).status_code == 401


async def test_guesses_at_one_key_from_many_addresses_are_limited_per_key(api: Api) -> None:
    prefix, _ = split_api_key(api.key) or ("", "")
    other = await api.key_for("demo")
    answers = [
        (await get_from(api, f"192.0.2.{n}", f"sba_{prefix}_{secrets.token_urlsafe(32)}"))
        for n in range(DEFAULT_LIMIT + 5)
    ]
    assert [a.status_code for a in answers[:DEFAULT_LIMIT]] == [401] * DEFAULT_LIMIT
    assert_problem(answers[-1], 429, "authentication_limited")
    # Another key of the same tenant is untouched.
    assert (await get_from(api, "192.0.2.200", other)).status_code == 200


async def test_a_missing_header_and_good_keys_are_not_failures(api: Api) -> None:
    for _ in range(DEFAULT_LIMIT * 2):
        assert (
            await api.client.get("/v1/tools", headers={"X-Forwarded-For": "a"})
        ).status_code == 401
        assert (await get_from(api, "a", api.key)).status_code == 200
    assert (await get_from(api, "a", guess())).status_code == 401


async def test_zero_turns_the_limit_off(tmp_path) -> None:
    async for api in limited_api(
        tmp_path,
        "memory",
        SBA_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE="0",
        SBA_RATE_LIMIT__AUTH_FAILURES_PER_KEY_PER_MINUTE="0",
    ):
        answers = {
            (await api.client.get("/v1/tools", headers=api.auth(guess()))).status_code
            for _ in range(30)
        }
        assert answers == {401}


class FakeClock:
    def __init__(self) -> None:
        self.s = 1_000.0

    def __call__(self) -> float:
        return self.s

    def us(self) -> int:
        return round(self.s * 1_000_000)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=12),
    steps=st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=20)), min_size=1, max_size=60
    ),
)
async def test_no_address_gets_more_failures_looked_at_than_its_allowance(
    limit: int, steps: list[tuple[bool, float]]
) -> None:
    """Whatever a client sends and whenever: wrong credentials answered 401 never exceed the
    allowance (``limit`` at once, then one per ``60 / limit`` seconds), and each refusal is
    preceded by an admitted failure, so at most that many more are ever looked at."""
    clock = FakeClock()
    start = clock.s
    limiter = MemoryRateLimiter(clock_us=clock.us)
    failures = AuthFailureLimit(
        limiter, per_address_per_minute=limit, per_key_per_minute=0, clock=clock
    )
    answered_401 = looked_at = 0
    for wrong, wait_s in steps:
        clock.s += wait_s
        try:
            failures.check("addr", None)
        except RateLimited:
            continue
        if not wrong:
            continue
        looked_at += 1
        try:
            await failures.failed("addr", None)
            answered_401 += 1
        except RateLimited:
            pass
        assert answered_401 <= limit + int((clock.s - start) * limit / 60.0)
        assert looked_at <= 2 * answered_401 + 1


async def test_wrong_admin_tokens_are_failed_authentications_too(tmp_path) -> None:
    async for api in limited_api(tmp_path, "memory", SBA_AUTH__ADMIN_TOKEN="the-admin-token"):
        answers = [
            (
                await api.client.get(
                    "/admin/v1/tenants", headers={"Authorization": f"Bearer guess-{n}"}
                )
            ).status_code
            for n in range(DEFAULT_LIMIT + 3)
        ]
        assert answers == [401] * DEFAULT_LIMIT + [429] * 3
        right = {"Authorization": "Bearer the-admin-token"}
        assert (await api.client.get("/admin/v1/tenants", headers=right)).status_code == 429
