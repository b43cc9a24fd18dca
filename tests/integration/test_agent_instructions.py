"""A real model gets the agent's instructions: search the knowledge base with kb_search, cite
sources by number, answer in the tenant's language; a tenant may replace them. Checked on the
wire of an OpenAI-compatible provider (a fake on 127.0.0.1) through a whole run."""

from __future__ import annotations

import json

from tests.integration.test_http_api import make_api, parse_sse, run_body
from tests.integration.test_model_chain import ThreadedLoop, answer
from tests.llm.conftest import FakeProvider, sse, stream_reply
from tests.llm.test_openai_wire import TEXT_STREAM, USAGE, chunk, delta, tool_delta

SEARCH = sse(
    tool_delta(
        '{"index":0,"id":"call_kb1","type":"function",'
        '"function":{"name":"kb_search","arguments":"{\\"query\\": \\"refund policy\\"}"}}',
        first=True,
    ),
    chunk(delta("{}", '"tool_calls"')),
    USAGE,
    "data: [DONE]",
)
CITED = sse(
    chunk(delta('{"role":"assistant","content":""}')),
    chunk(delta('{"content":"Refunds are paid within 30 days [1].\\n\\nSources: [1] Refunds"}')),
    chunk(delta("{}", '"stop"')),
    USAGE,
    "data: [DONE]",
)


def provider_chain(fake: FakeProvider) -> str:
    entry = {"name": "real", "kind": "openai", "base_url": fake.url, "model": "gpt-x"}
    return json.dumps([{**entry, "max_attempts": 1, "timeout_s": 5}])


class Fake:
    def __init__(self) -> None:
        self.loop = ThreadedLoop()
        self.provider = FakeProvider()
        self.loop.run(self.provider.start())

    def close(self) -> None:
        self.loop.run(self.provider.stop())
        self.loop.close()


def system_of(body: dict) -> str:
    first = body["messages"][0]
    assert first["role"] == "system", body["messages"]
    return first["content"]


async def test_a_real_model_is_told_to_search_cite_and_follow_the_language(tmp_path) -> None:
    fake = Fake()
    try:
        fake.provider.script(stream_reply(SEARCH), stream_reply(CITED))
        async for api in make_api(tmp_path, SBA_LLM__CHAIN=provider_chain(fake.provider)):
            frames = parse_sse((await api.run(run_body(text="What is the refund policy?"))).text)
            assert "[1]" in answer(frames)
        first, second = (r.json() for r in fake.provider.requests)
        told = system_of(first)
        assert "kb_search" in told and "[1]" in told and "Sources" in told
        assert "language the person writes in" in told
        assert "kb_search" in [t["function"]["name"] for t in first["tools"]]
        # The next turn carries the same instructions and the passages, numbered for citing.
        assert system_of(second) == told
        results = [m for m in second["messages"] if m["role"] == "tool"]
        assert results and "refund" in results[0]["content"].lower()
        assert "What is the refund policy?" in [m["content"] for m in second["messages"]]
    finally:
        fake.close()


async def test_a_tenant_sets_its_language_or_replaces_the_instructions(tmp_path) -> None:
    fake = Fake()
    tenants = {
        "demo": {"language": "Indonesian"},
        "toko": {"system_prompt": "Kamu asisten Toko Budi.", "language": "Indonesian"},
    }
    try:
        fake.provider.script(stream_reply(TEXT_STREAM))
        async for api in make_api(
            tmp_path,
            SBA_LLM__CHAIN=provider_chain(fake.provider),
            SBA_LLM__TENANTS=json.dumps(tenants),
        ):
            assert (await api.run(run_body("r1", "t1", "Apa kebijakan refund?"))).status_code == 200
            toko = await api.key_for("toko")
            assert (await api.run(run_body("r2", "t2", "Halo"), toko)).status_code == 200
        demo, own = (system_of(r.json()) for r in fake.provider.requests)
        assert "Always answer in Indonesian." in demo and "kb_search" in demo
        assert own.startswith("Kamu asisten Toko Budi.")
        assert "business assistant of this organisation" not in own
        assert "Always answer in Indonesian." in own
    finally:
        fake.close()
