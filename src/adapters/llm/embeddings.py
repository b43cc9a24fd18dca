"""Embeddings from any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, Azure's
OpenAI-compatible endpoint, Ollama, vLLM, LM Studio, …): ``{"model", "input": [texts],
"encoding_format": "float"}`` (plus ``dimensions`` when set, for models that can shorten their
vectors), answered by ``{"data": [{"index", "embedding"}], "model", "usage"}``. The answer is
validated and put back in input order; 429, 408 and 5xx are retried with jittered backoff
(honouring Retry-After); every failure is ``ServiceUnavailable`` with the provider's reason and
never the key."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgspec

from adapters.llm.http import (
    HttpRetryPolicy,
    error_for_status,
    error_for_transport,
    redact,
    retry_after_s,
)
from application.errors import ServiceUnavailable

_RETRIED = frozenset({408, 429, 500, 502, 503, 504, 529})


class _Item(msgspec.Struct):
    index: int
    embedding: list[float]


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class _Answer(msgspec.Struct):
    data: list[_Item]
    model: str = ""
    usage: _Usage | None = None


_answer = msgspec.json.Decoder(_Answer)


class OpenAIEmbedder:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimensions: int | None = None,
        retry: HttpRetryPolicy | None = None,
        provider: str = "embeddings provider",
    ) -> None:
        if not model:
            raise ValueError("an embeddings model is required")
        if dimensions is not None and dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        self._client = client
        self._url = base_url.rstrip("/") + "/embeddings"
        self._key = api_key
        self._dimensions = dimensions
        self._retry = retry or HttpRetryPolicy()
        self._provider = provider
        # Vectors of another size are another model: stored vectors are kept apart by this.
        self.model = model if dimensions is None else f"{model}@{dimensions}"
        self._model = model
        self.tokens_used = 0

    def _fail(self, text: str) -> ServiceUnavailable:
        return ServiceUnavailable(redact(text, [self._key or ""]))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        body: dict[str, object] = {
            "model": self._model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        payload = msgspec.json.encode(body)
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = await self._client.post(self._url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = error_for_transport(self._provider, exc, [self._key or ""]).message
            else:
                if response.status_code == 200:
                    return self._vectors(response.content, len(texts))
                problem = error_for_status(
                    self._provider, response.status_code, response.content, [self._key or ""]
                ).message
                if response.status_code not in _RETRIED:
                    raise self._fail(problem)
                wait = retry_after_s(response.headers)
            if attempt >= self._retry.max_attempts:
                raise self._fail(problem)
            await self._retry.sleep(self._retry.delay_s(attempt - 1, wait))

    def _vectors(self, content: bytes, count: int) -> list[list[float]]:
        try:
            answer = _answer.decode(content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._fail(f"{self._provider} sent a malformed answer: {exc}") from exc
        if sorted(item.index for item in answer.data) != list(range(count)):
            raise self._fail(
                f"{self._provider} answered {len(answer.data)} embeddings for {count} inputs"
            )
        sizes = {len(item.embedding) for item in answer.data}
        if len(sizes) != 1 or 0 in sizes:
            raise self._fail(f"{self._provider} sent embeddings of differing or zero size")
        if answer.usage is not None:
            self.tokens_used += answer.usage.total_tokens
        return [item.embedding for item in sorted(answer.data, key=lambda i: i.index)]
