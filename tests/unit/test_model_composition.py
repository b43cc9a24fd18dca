"""The fallback chain and the response cache, with scripted models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.llm.cache import CachedResponses
from adapters.memory.cache import MemoryCache
from application.conversation.models import (
    KB_TAG,
    CachingChatModel,
    FallbackChatModel,
    NamedModel,
    cache_key,
)
from application.conversation.ports import ChatChunk, ChatRequest, TextChunk, UsageChunk
from application.errors import ModelError, ServiceUnavailable
from domain.conversation.model import Message, Role, Usage
from domain.ids import MessageId, TenantId


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def now_ms(self) -> int:
        return self.now


class Scripted:
    def __init__(self, name: str, fail: str | None = None, after: int = 0) -> None:
        self.name, self.fail, self.after, self.calls = name, fail, after, 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.calls += 1
        for i in range(self.after):
            yield TextChunk(f"{self.name}{i} ")
        if self.fail:
            raise ModelError(f"{self.name} failed", code=self.fail)
        yield TextChunk(f"answer from {self.name}")
        yield UsageChunk(Usage(input_tokens=1, output_tokens=1))


def request(tenant: str = "t1", text: str = "hi") -> ChatRequest:
    return ChatRequest(
        tenant_id=TenantId(tenant),
        messages=(Message(id=MessageId("u"), role=Role.USER, content=text),),
    )


async def text(model, req=None) -> str:
    return "".join(
        [c.delta async for c in model.stream(req or request()) if isinstance(c, TextChunk)]
    )


@pytest.mark.parametrize("code", ["model_timeout", "model_unavailable", "model_rate_limited"])
async def test_a_failing_primary_hands_the_run_to_the_fallback_and_is_counted(code) -> None:
    primary, backup = Scripted("primary", fail=code), Scripted("backup")
    chain = FallbackChatModel(
        [NamedModel("primary", primary), NamedModel("backup", backup)], Clock()
    )
    assert await text(chain) == "answer from backup"
    assert chain.stats.failures == {"primary": 1}
    assert chain.stats.fallbacks == 1


async def test_usage_is_recorded_under_the_name_of_the_model_that_answered() -> None:
    primary, backup = Scripted("primary", fail="model_unavailable"), Scripted("backup")
    chain = FallbackChatModel(
        [NamedModel("gpt-primary", primary), NamedModel("claude-backup", backup)], Clock()
    )
    usage = [c async for c in chain.stream(request()) if isinstance(c, UsageChunk)]
    assert usage == [UsageChunk(Usage(input_tokens=1, output_tokens=1), "claude-backup")]


async def test_every_model_down_is_a_clear_model_unavailable() -> None:
    chain = FallbackChatModel(
        [
            NamedModel("a", Scripted("a", fail="model_timeout")),
            NamedModel("b", Scripted("b", fail="model_unavailable")),
        ],
        Clock(),
    )
    with pytest.raises(ModelError) as caught:
        await text(chain)
    assert caught.value.code == "model_unavailable"
    assert "every model failed" in caught.value.message


async def test_a_bad_request_is_not_retried_elsewhere() -> None:
    backup = Scripted("backup")
    chain = FallbackChatModel(
        [NamedModel("a", Scripted("a", fail="model_bad_request")), NamedModel("backup", backup)],
        Clock(),
    )
    with pytest.raises(ModelError):
        await text(chain)
    assert backup.calls == 0


async def test_a_failure_after_streaming_began_is_not_switched_mid_answer() -> None:
    backup = Scripted("backup")
    chain = FallbackChatModel(
        [
            NamedModel("a", Scripted("a", fail="model_unavailable", after=2)),
            NamedModel("backup", backup),
        ],
        Clock(),
    )
    with pytest.raises(ModelError):
        await text(chain)
    assert backup.calls == 0


async def test_an_open_breaker_skips_the_model_until_it_cools_down() -> None:
    clock = Clock()
    primary, backup = Scripted("p", fail="model_timeout"), Scripted("b")
    chain = FallbackChatModel(
        [NamedModel("p", primary), NamedModel("b", backup)], clock, threshold=2, cool_down_ms=10_000
    )
    for _ in range(2):
        await text(chain)
    assert primary.calls == 2
    await text(chain)
    assert primary.calls == 2 and chain.stats.skipped_open == 1
    clock.now += 10_001
    primary.fail = None
    assert await text(chain) == "answer from p"


async def test_a_repeated_request_is_served_from_the_cache_and_counted() -> None:
    inner = Scripted("m")
    cached = CachingChatModel(inner, CachedResponses(MemoryCache()), model_name="m")
    first, second = await text(cached), await text(cached)
    assert first == second == "answer from m"
    assert inner.calls == 1
    assert (cached.hits, cached.misses) == (1, 1)


async def test_the_cache_is_never_shared_across_tenants() -> None:
    inner = Scripted("m")
    cached = CachingChatModel(inner, CachedResponses(MemoryCache()), model_name="m")
    await text(cached, request("t1"))
    await text(cached, request("t2"))
    assert inner.calls == 2


async def test_a_knowledge_base_change_drops_the_tenants_cached_answers_only() -> None:
    inner, store = Scripted("m"), MemoryCache()
    cached = CachingChatModel(inner, CachedResponses(store), model_name="m")
    await text(cached, request("t1"))
    await text(cached, request("t2"))
    assert await store.invalidate("t1", [KB_TAG]) == 1
    await text(cached, request("t1"))
    await text(cached, request("t2"))
    assert inner.calls == 3


class DownCache:
    async def get(self, tenant_id, key):
        raise ServiceUnavailable("redis is unreachable")

    async def set(self, tenant_id, key, chunks, *, ttl_s, tags=()):
        raise ServiceUnavailable("redis is unreachable")


async def test_an_unreachable_cache_is_a_miss_and_the_model_answers() -> None:
    inner = Scripted("m")
    cached = CachingChatModel(inner, DownCache(), model_name="m")
    assert [await text(cached) for _ in range(2)] == ["answer from m"] * 2
    assert inner.calls == 2


async def test_a_failed_response_is_not_cached() -> None:
    inner = Scripted("m", fail="model_timeout")
    cached = CachingChatModel(inner, CachedResponses(MemoryCache()), model_name="m")
    for _ in range(2):
        with pytest.raises(ModelError):
            await text(cached)
    assert inner.calls == 2


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_cache_keys_differ_whenever_the_tenant_or_the_question_does(a, b, q) -> None:
    assert (cache_key(request("ten_a", q), "m") == cache_key(request("ten_b", q), "m")) is False
    assert (cache_key(request("t", a), "m") == cache_key(request("t", b), "m")) == (a == b)
