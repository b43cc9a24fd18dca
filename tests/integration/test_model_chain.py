"""Real providers through the whole path: a fallback chain and the response cache, with fake
OpenAI-compatible providers on 127.0.0.1 speaking the documented wire format."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from application.conversation.models import (
    CachingChatModel,
    FallbackChatModel,
    TenantRoutedChatModel,
)
from application.conversation.ports import ChatModel
from tests.integration.test_http_api import Api, make_api, parse_sse, run_body, types
from tests.llm.conftest import FakeProvider, Reply, stream_reply
from tests.llm.test_openai_wire import RATE_LIMITED, SERVER_ERROR, TEXT_STREAM


class ThreadedLoop:
    """The fake providers get a loop of their own: the in-process test client drives the app
    from the test's loop, which must not also be the one that serves the providers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def providers() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    loop = ThreadedLoop()
    primary, backup = FakeProvider(), FakeProvider()
    loop.run(primary.start())
    loop.run(backup.start())
    yield primary, backup
    loop.run(primary.stop())
    loop.run(backup.stop())
    loop.close()


def chain(primary: FakeProvider, backup: FakeProvider) -> str:
    return json.dumps(
        [
            {
                "name": "primary",
                "kind": "openai",
                "base_url": primary.url,
                "model": "gpt-a",
                "api_key": "sk-primary",
                "max_attempts": 1,
                "timeout_s": 2,
            },
            {
                "name": "backup",
                "kind": "openai",
                "base_url": backup.url,
                "model": "gpt-b",
                "max_attempts": 1,
                "timeout_s": 2,
            },
        ]
    )


async def chain_api(tmp_path, primary, backup, **env) -> AsyncIterator[Api]:
    async for api in make_api(tmp_path, SBA_LLM__CHAIN=chain(primary, backup), **env):
        yield api


def answer(frames) -> str:
    return "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")


async def demo_model(api) -> ChatModel:
    """The model the demo tenant is answered by (every tenant is routed: profiles may narrow
    a tenant's models at any time)."""
    routed = await api.container.get(ChatModel)
    assert isinstance(routed, TenantRoutedChatModel)
    return routed.model_for("demo")


@pytest.mark.parametrize("failure", [SERVER_ERROR, RATE_LIMITED, Reply(hang=True)])
async def test_runs_complete_on_the_fallback_when_the_primary_fails(
    tmp_path, providers, failure
) -> None:
    primary, backup = providers
    primary.script(failure)
    backup.script(stream_reply(TEXT_STREAM))
    async for api in chain_api(tmp_path, primary, backup):
        frames = parse_sse((await api.run(run_body())).text)
        assert types(frames)[-1] == "RUN_FINISHED", frames[-1]
        assert answer(frames) == "Hello! How can I help?"
        assert backup.requests[0].json()["model"] == "gpt-b"
        model = await demo_model(api)
        assert isinstance(model, FallbackChatModel)
        assert model.stats.failures == {"primary": 1}
        assert model.stats.fallbacks == 1


async def test_every_provider_down_ends_the_run_with_a_clear_code(tmp_path, providers) -> None:
    primary, backup = providers
    primary.script(SERVER_ERROR)
    backup.script(SERVER_ERROR)
    async for api in chain_api(tmp_path, primary, backup):
        frames = parse_sse((await api.run(run_body())).text)
        assert types(frames)[-1] == "RUN_ERROR"
        assert frames[-1][1]["code"] == "model_unavailable"
        assert "every model failed" in frames[-1][1]["message"]
        run = (await api.client.get("/v1/runs/r1", headers=api.auth())).json()
        assert (run["status"], run["errorCode"]) == ("failed", "model_unavailable")


async def test_a_repeated_request_is_served_from_the_cache_but_never_across_tenants(
    tmp_path, providers
) -> None:
    primary, backup = providers
    primary.script(stream_reply(TEXT_STREAM))
    async for api in chain_api(tmp_path, primary, backup, SBA_LLM__CACHE_TTL_S="60"):
        first = parse_sse((await api.run(run_body("r1", "t1", "same question"))).text)
        again = parse_sse((await api.run(run_body("r2", "t2", "same question"))).text)
        assert answer(first) == answer(again) == "Hello! How can I help?"
        assert len(primary.requests) == 1
        other = await api.key_for("acme")
        theirs = parse_sse((await api.run(run_body("r3", "t3", "same question"), key=other)).text)
        assert answer(theirs) == "Hello! How can I help?"
        assert len(primary.requests) == 2
        model = await demo_model(api)
        assert isinstance(model, CachingChatModel)
        assert (model.hits, model.misses) == (1, 2)


async def test_per_tenant_flags_pick_the_chain_and_switch_the_cache(tmp_path, providers) -> None:
    primary, backup = providers
    primary.script(stream_reply(TEXT_STREAM))
    backup.script(stream_reply(TEXT_STREAM))
    flags = json.dumps({"acme": {"chain": ["backup"], "cache": False}})
    async for api in chain_api(
        tmp_path, primary, backup, SBA_LLM__CACHE_TTL_S="60", SBA_LLM__TENANTS=flags
    ):
        acme = await api.key_for("acme")
        for run in ("r1", "r2"):
            frames = parse_sse((await api.run(run_body(run, run, "same"), key=acme)).text)
            assert answer(frames) == "Hello! How can I help?"
        assert (len(primary.requests), len(backup.requests)) == (0, 2)  # backup, no cache
        for run in ("r3", "r4"):
            parse_sse((await api.run(run_body(run, run, "same"))).text)
        assert (len(primary.requests), len(backup.requests)) == (1, 2)  # default, cached


async def test_a_tenant_flag_naming_an_unknown_model_stops_start_up(tmp_path, providers) -> None:
    primary, backup = providers
    with pytest.raises(Exception, match="SBA_LLM__TENANTS"):
        async for _ in chain_api(
            tmp_path, primary, backup, SBA_LLM__TENANTS='{"acme": {"chain": ["nope"]}}'
        ):
            pass
