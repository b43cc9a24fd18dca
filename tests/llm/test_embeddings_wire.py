"""The OpenAI-compatible embeddings adapter on the wire: the request OpenAI's API reference
shows (``POST /v1/embeddings`` with model, input and encoding_format), its documented answer
shape (``object: list``, ``data[].embedding``/``index``, ``usage``), answers out of order,
retries, and errors that name the provider's reason but never the key."""

from __future__ import annotations

import pytest

from adapters.llm.embeddings import OpenAIEmbedder
from application.errors import ServiceUnavailable
from tests.llm.conftest import json_reply

KEY = "sk-test-embeddings-0123456789"


def documented(*vectors: list[float], model: str = "text-embedding-3-small") -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


def embedder(fake, client, retry, **kw) -> OpenAIEmbedder:
    return OpenAIEmbedder(
        client,
        base_url=f"{fake.url}/v1",
        model=kw.pop("model", "text-embedding-3-small"),
        api_key=KEY,
        retry=retry,
        **kw,
    )


async def test_texts_are_sent_as_documented_and_vectors_come_back_in_order(
    fake, client, retry
) -> None:
    answer = documented([0.0023064255, -0.009327292, 0.015797347], [0.5, 0.5, -0.1])
    answer["data"].reverse()  # the index, not the position, says which input a vector is for
    fake.script(json_reply(200, answer))
    e = embedder(fake, client, retry)
    out = await e.embed(["The food was delicious and the waiter...", "Refunds"])
    assert out == [[0.0023064255, -0.009327292, 0.015797347], [0.5, 0.5, -0.1]]
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/embeddings")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "model": "text-embedding-3-small",
        "input": ["The food was delicious and the waiter...", "Refunds"],
        "encoding_format": "float",
    }
    assert e.tokens_used == 8 and e.model == "text-embedding-3-small"


async def test_dimensions_are_asked_for_and_name_the_model_apart(fake, client, retry) -> None:
    fake.script(json_reply(200, documented([0.1, 0.2])))
    e = embedder(fake, client, retry, dimensions=2)
    await e.embed(["x"])
    assert fake.requests[0].json()["dimensions"] == 2
    assert e.model == "text-embedding-3-small@2"


async def test_rate_limits_and_outages_are_retried_then_succeed(
    fake, client, retry, sleeps
) -> None:
    fake.script(
        json_reply(
            429,
            {"error": {"message": "Rate limit reached", "type": "requests"}},
            {"retry-after-ms": "250"},
        ),
        json_reply(503, {"error": {"message": "overloaded"}}),
        json_reply(200, documented([1.0, 0.0])),
    )
    assert await embedder(fake, client, retry).embed(["x"]) == [[1.0, 0.0]]
    assert len(fake.requests) == 3
    assert sleeps.delays == [0.25, 0.2]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            json_reply(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {KEY}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            ),
            "HTTP 401",
        ),
        (json_reply(400, {"error": {"message": "model not found"}}), "model not found"),
        (
            json_reply(200, {"object": "list", "data": [{"embedding": "x", "index": 0}]}),
            "malformed",
        ),
        (json_reply(200, documented([1.0], [2.0])), "2 embeddings for 1 inputs"),
        (json_reply(200, documented([])), "zero size"),
    ],
)
async def test_failures_are_service_unavailable_with_the_reason_and_no_key(
    fake, client, retry, reply, reason
) -> None:
    fake.script(reply)
    with pytest.raises(ServiceUnavailable) as info:
        await embedder(fake, client, retry).embed(["x"])
    assert reason in info.value.message
    assert KEY not in info.value.message
    assert len(fake.requests) == 1  # not retried


async def test_an_unreachable_provider_is_retried_then_service_unavailable(client, retry) -> None:
    e = OpenAIEmbedder(client, base_url="http://127.0.0.1:1/v1", model="m", retry=retry)
    with pytest.raises(ServiceUnavailable, match="could not be reached"):
        await e.embed(["x"])
    assert await e.embed([]) == []


def test_settings_that_cannot_work_are_refused(client) -> None:
    with pytest.raises(ValueError, match="model"):
        OpenAIEmbedder(client, base_url="http://x", model="")
    with pytest.raises(ValueError, match="dimensions"):
        OpenAIEmbedder(client, base_url="http://x", model="m", dimensions=0)
