"""Token budgets through the API: runs are charged what they used, once; past the soft limit a
run carries a warning (a CUSTOM event and a header); at the hard limit the next run is refused
with a problem naming the budget, until the period ends. /v1/usage totals are the sum of the
runs' own usage."""

from __future__ import annotations

import pytest

from tests.integration.test_http_api import make_api, parse_sse, run_body


async def run_usage(api, run_id: str) -> int:
    run = (await api.client.get(f"/v1/runs/{run_id}", headers=api.auth())).json()
    return run["inputTokens"] + run["outputTokens"]


async def test_a_hard_budget_stops_the_next_run_and_usage_adds_up(tmp_path) -> None:
    env = {
        "SBA_RATE_LIMIT__TOKEN_BUDGET": "1",  # the first run may start; it uses more
        "SBA_RATE_LIMIT__BUDGET_CACHE_MS": "0",
        "SBA_RATE_LIMIT__BUDGET_PERIOD": "day",
    }
    async for api in make_api(tmp_path, **env):
        first = await api.run(run_body(run_id="r1", thread_id="t1"))
        assert first.status_code == 200
        assert first.headers["sba-token-budget"].startswith("state=ok; used=0; soft=0; hard=1")
        used = await run_usage(api, "r1")
        assert used > 0

        refused = await api.run(run_body(run_id="r2", thread_id="t1"))
        assert refused.status_code == 429
        problem = refused.json()
        assert problem["code"] == "budget_exhausted"
        assert f"used {used} of its 1 tokens this day" in problem["detail"]
        assert 0 < int(refused.headers["retry-after"]) <= 86_400

        usage = (await api.client.get("/v1/usage", headers=api.auth())).json()
        assert usage["total"]["runs"] == 1
        assert usage["total"]["totalTokens"] == used
        assert usage["budget"]["state"] == "hard" and usage["budget"]["usedTokens"] == used
        assert sum(d["totalTokens"] for d in usage["days"]) == used


async def test_past_the_soft_limit_runs_go_on_with_a_warning(tmp_path) -> None:
    env = {
        "SBA_RATE_LIMIT__TOKEN_BUDGET_SOFT": "1",
        "SBA_RATE_LIMIT__TOKEN_BUDGET": "1000000",
        "SBA_RATE_LIMIT__BUDGET_CACHE_MS": "0",
    }
    async for api in make_api(tmp_path, **env):
        quiet = await api.run(run_body(run_id="r1", thread_id="t1"))
        assert "CUSTOM" not in [d["type"] for _, d in parse_sse(quiet.text)]
        warned = await api.run(run_body(run_id="r2", thread_id="t1"))
        assert warned.status_code == 200
        assert warned.headers["sba-token-budget"].startswith("state=soft;")
        frames = [d for _, d in parse_sse(warned.text)]
        assert [f["type"] for f in frames[:2]] == ["RUN_STARTED", "CUSTOM"]
        assert frames[1]["name"] == "sba.budget_warning"
        assert frames[1]["value"]["state"] == "soft"
        assert frames[-1]["type"] == "RUN_FINISHED"
        total = await run_usage(api, "r1") + await run_usage(api, "r2")
        usage = (await api.client.get("/v1/usage", headers=api.auth())).json()
        assert usage["total"]["totalTokens"] == total and usage["total"]["runs"] == 2


async def test_usage_ranges_are_checked(tmp_path) -> None:
    async for api in make_api(tmp_path):
        h = api.auth()
        ok = await api.client.get("/v1/usage?from=2026-11-01&to=2026-11-30", headers=h)
        assert ok.status_code == 200 and ok.json()["since"] == "2026-11-01"
        assert ok.json()["until"] == "2026-11-30" and "budget" not in ok.json()
        for query in ("from=yesterday", "from=2026-11-30&to=2026-11-01", "from=2020-01-01"):
            bad = await api.client.get(f"/v1/usage?{query}", headers=h)
            assert bad.status_code == 422, query
            assert bad.json()["code"] == "invalid_input"


async def test_usage_is_split_by_the_model_that_answered_and_priced(tmp_path) -> None:
    prices = '{"offline": {"input_per_million": 2.5, "output_per_million": 10}}'
    async for api in make_api(tmp_path, SBA_BILLING__PRICES=prices, SBA_BILLING__CURRENCY="EUR"):
        for run_id in ("r1", "r2"):
            ok = await api.run(
                run_body(run_id=run_id, thread_id="t1", text="What is the refund policy?")
            )
            assert ok.status_code == 200
        runs = [
            (await api.client.get(f"/v1/runs/{r}", headers=api.auth())).json() for r in ("r1", "r2")
        ]
        assert {r["model"] for r in runs} == {"offline"}
        usage = (await api.client.get("/v1/usage", headers=api.auth())).json()
        assert usage["currency"] == "EUR"
        [model] = usage["models"]
        inp = sum(r["inputTokens"] for r in runs)
        out = sum(r["outputTokens"] for r in runs)
        assert (model["model"], model["runs"], model["inputTokens"], model["outputTokens"]) == (
            "offline",
            2,
            inp,
            out,
        )
        assert model["cost"] == pytest.approx(round((inp * 2.5 + out * 10) / 1e6, 6))
        assert usage["total"]["cost"] == model["cost"]
        assert sum(d["cost"] for d in usage["days"]) == pytest.approx(model["cost"])
