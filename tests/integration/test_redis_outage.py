"""Redis stopped in the middle of serving: every request still gets a clean answer by the
configured fail mode, and once Redis is back everything works again without a restart."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from application.quota.use_cases import AdmitRequest
from tests.integration.test_http_api import Api, assert_problem, make_api, parse_sse, run_body
from tests.redis_support import RedisServer, own_redis


async def outage_api(tmp_path, server: RedisServer, fail_mode: str) -> AsyncIterator[Api]:
    async for api in make_api(
        tmp_path,
        own_setup=True,
        SBA_LLM__LOADTEST="true",
        SBA_REDIS_URL=server.url,
        SBA_RATE_LIMIT__DEFAULT_PER_MINUTE="5",
        SBA_RATE_LIMIT__BURST_RATIO="0.4",
        SBA_RATE_LIMIT__FAIL_MODE=fail_mode,
        SBA_REDIS__RETRY_AFTER_FAILURE_S="0.0",
        SBA_REDIS__TIMEOUT_S="0.5",
    ):
        yield api


async def status(api: Api) -> int:
    return (await api.client.get("/v1/runs/none", headers=api.auth())).status_code


def doc_post(api: Api, key: str | None):
    headers = {**api.auth(), "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    body = json.dumps({"title": "Outage note", "content": "Written while Redis was away."})
    return api.client.post("/v1/kb/documents", headers=headers, content=body)


async def test_failing_open_answers_cleanly_and_recovers_when_redis_returns(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    with own_redis(tmp_path) as server:
        async for api in outage_api(tmp_path, server, "open"):
            assert await status(api) == 404
            server.stop()

            # Admitted without counting: more requests than the limit, each a clean answer.
            assert [await status(api) for _ in range(4)] == [404] * 4
            run = await api.run(run_body("during"))
            assert run.status_code == 200
            assert parse_sse(run.text)[-1][1]["type"] == "RUN_FINISHED"
            assert (await doc_post(api, None)).status_code == 201
            # An idempotency key cannot be honoured without its store: refused, not ignored.
            assert_problem(await doc_post(api, "k-outage"), 503, "service_unavailable")
            admit = await api.client.app.state.dishka_container.get(AdmitRequest)
            assert admit.stats.degraded >= 5
            assert any("failing open" in r.getMessage() for r in caplog.records)

            server.start()
            # Back: the limit is enforced again (Redis restarted empty: a fresh allowance).
            assert [await status(api) for _ in range(3)] == [404, 404, 429]
            first = await doc_post(api, "k-after")
            again = await doc_post(api, "k-after")
            assert first.status_code == again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"


async def test_failing_closed_refuses_with_503_and_recovers_when_redis_returns(tmp_path) -> None:
    with own_redis(tmp_path) as server:
        async for api in outage_api(tmp_path, server, "closed"):
            assert await status(api) == 404
            server.stop()
            refused = await api.client.get("/v1/runs/none", headers=api.auth())
            assert_problem(refused, 503, "limiter_unavailable")
            assert_problem(await api.run(run_body("during")), 503, "limiter_unavailable")
            server.start()
            assert await status(api) == 404
            run = await api.run(run_body("after"))
            assert parse_sse(run.text)[-1][1]["type"] == "RUN_FINISHED"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_health_stays_up_while_redis_is_down(tmp_path, fail_mode) -> None:
    with own_redis(tmp_path) as server:
        async for api in outage_api(tmp_path, server, fail_mode):
            server.stop()
            assert (await api.client.get("/healthz")).status_code == 200
            server.start()
