"""Chat models composed of chat models: a fallback chain with circuit breakers, and a
tenant-scoped response cache. Both are ``ChatModel``s themselves."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from application.conversation.ports import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    UsageChunk,
)
from application.errors import ModelError, ServiceUnavailable
from application.ports import KB_CACHE_TAG, Clock
from application.tenancy.profiles import TenantProfiles

# Failures worth trying the next model for; a bad request or bad auth would fail there too.
FALLBACK_CODES = frozenset({"model_timeout", "model_unavailable", "model_rate_limited"})


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class NamedModel:
    name: str
    model: ChatModel


@dataclass(slots=True)
class ModelStats:
    """Counts a deployment can export: calls, failures and fallbacks per model name."""

    calls: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    skipped_open: int = 0

    def bump(self, table: dict[str, int], name: str) -> None:
        table[name] = table.get(name, 0) + 1


class FallbackChatModel:
    """Tries each model in order. A model that fails with a timeout, 5xx or 429 *before it has
    produced anything* hands the request to the next; once a model has streamed a chunk the run
    is committed to it, and a later failure ends the run. After ``threshold`` failures in a row
    a model's breaker opens for ``cool_down_ms`` and the model is skipped."""

    def __init__(
        self,
        models: Sequence[NamedModel],
        clock: Clock,
        *,
        threshold: int = 3,
        cool_down_ms: int = 30_000,
    ) -> None:
        if not models:
            raise ValueError("a fallback chain needs at least one model")
        self._models = list(models)
        self._clock = clock
        self._threshold = threshold
        self._cool_down_ms = cool_down_ms
        self._breakers = {m.name: _Breaker() for m in models}
        self.stats = ModelStats()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        last: ModelError | None = None
        for named in self._models:
            breaker = self._breakers[named.name]
            if breaker.open_until_ms > self._clock.now_ms():
                self.stats.skipped_open += 1
                last = ModelError(f"{named.name}: circuit open", code="model_unavailable")
                continue
            self.stats.bump(self.stats.calls, named.name)
            produced = False
            try:
                async for chunk in named.model.stream(request):
                    produced = True
                    if isinstance(chunk, UsageChunk):
                        # Usage is recorded (and priced) under the model's name in the chain.
                        chunk = UsageChunk(usage=chunk.usage, model=named.name)
                    yield chunk
            except ModelError as exc:
                self.stats.bump(self.stats.failures, named.name)
                self._failed(breaker)
                if produced or exc.code not in FALLBACK_CODES:
                    raise
                last = exc
                self.stats.fallbacks += 1
                continue
            breaker.failures = 0
            return
        raise ModelError(
            f"every model failed; the last: {last.message if last else 'none'}",
            code="model_unavailable",
        )

    def _failed(self, breaker: _Breaker) -> None:
        breaker.failures += 1
        if breaker.failures >= self._threshold:
            breaker.open_until_ms = self._clock.now_ms() + self._cool_down_ms
            breaker.failures = 0


KB_TAG = KB_CACHE_TAG


class ResponseCache(Protocol):
    """Stored responses by tenant and key, with a time to live and tags. ``get`` returns None
    after expiry or invalidation; both raise ``ServiceUnavailable`` when the store is down."""

    async def get(self, tenant_id: str, key: str) -> Sequence[ChatChunk] | None: ...

    async def set(
        self,
        tenant_id: str,
        key: str,
        chunks: Sequence[ChatChunk],
        *,
        ttl_s: float,
        tags: Sequence[str] = (),
    ) -> None: ...


def cache_key(request: ChatRequest, model_name: str) -> str:
    """Everything that shapes an answer, and the tenant: one tenant never reads another's."""
    payload = {
        "tenant": request.tenant_id,
        "model": request.model or model_name,
        "messages": [
            [
                m.role.value,
                m.content,
                m.tool_call_id,
                [[c.id, c.name, c.arguments] for c in m.tool_calls],
            ]
            for m in request.messages
        ],
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"chat:{hashlib.sha256(encoded.encode()).hexdigest()}"


class CachingChatModel:
    """Answers a request it has seen within ``ttl_s`` from the cache, counting hits and misses.
    Only complete responses are stored; usage is not replayed (a cached answer costs no
    tokens). A cache that cannot be reached is a miss, and a write to it is skipped: the model
    answers as if there were no cache."""

    def __init__(
        self, inner: ChatModel, cache: ResponseCache, *, model_name: str, ttl_s: float = 300.0
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._model_name = model_name
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        key = cache_key(request, self._model_name)
        try:
            cached = await self._cache.get(request.tenant_id, key)
        except ServiceUnavailable:
            cached = None
        if cached is not None:
            self.hits += 1
            for chunk in cached:
                yield chunk
            return
        self.misses += 1
        kept: list[ChatChunk] = []
        async for chunk in self._inner.stream(request):
            if not isinstance(chunk, UsageChunk):
                kept.append(chunk)
            yield chunk
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(request.tenant_id, key, kept, ttl_s=self._ttl_s, tags=(KB_TAG,))


class UnavailableChatModel:
    """Answers every request with a ``model_unavailable`` error (a tenant with no usable
    model): the run ends with a clear code instead of falling back to a model not allowed."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        raise ModelError(self._reason, code="model_unavailable")
        yield  # an async generator, like every model


class TenantRoutedChatModel:
    """Per-tenant feature flags for models: a tenant listed in ``per_tenant`` (by slug) gets its
    own chain and cache setting; every other tenant gets ``default``. A tenant whose profile
    limits its models gets the chain ``restrict`` builds from those names (remembered per set
    of names, so breakers and caches live as long as the process)."""

    def __init__(
        self,
        default: ChatModel,
        per_tenant: Mapping[str, ChatModel],
        *,
        profiles: TenantProfiles | None = None,
        restrict: Callable[[str, frozenset[str]], ChatModel] | None = None,
    ) -> None:
        self._default = default
        self._per_tenant = dict(per_tenant)
        self._profiles = profiles
        self._restrict = restrict
        self._restricted: dict[tuple[str, frozenset[str]], ChatModel] = {}

    def model_for(self, tenant_slug: str) -> ChatModel:
        if self._profiles is not None and self._restrict is not None:
            models = self._profiles.of(tenant_slug).models
            if models is not None:
                # Keyed by the tenant's settings entry (if any) and the names, not the tenant.
                key = (tenant_slug if tenant_slug in self._per_tenant else "", models)
                model = self._restricted.get(key)
                if model is None:
                    model = self._restrict(key[0], models)
                    self._restricted[key] = model
                return model
        return self._per_tenant.get(tenant_slug, self._default)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self.model_for(request.tenant_slug).stream(request)
