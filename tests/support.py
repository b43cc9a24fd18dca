"""Helpers shared by the test suites."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """A needed service or tool is missing: skip locally, fail in CI (where a skip would hide a
    missing install step)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)")
    pytest.skip(reason)


class NoContentSources:
    """A deployment without content sources."""

    def for_tenant(self, tenant_slug):
        return None

    def webhook_secret(self, tenant_slug):
        return None


def builtin_tools(clock, *, store=None, tasks=None, cache=None, renders=None):
    """The built-in tool registry on in-memory adapters."""
    from adapters.memory.cache import MemoryCache
    from adapters.memory.knowledge import MemoryKnowledgeStore
    from adapters.memory.tools import MemoryTaskRepository
    from adapters.tools.builtin import BuiltinToolRegistry
    from application.content.use_cases import ReadContent, ReadDocument
    from application.knowledge.use_cases import CachedKnowledgeSearch

    store = store if store is not None else MemoryKnowledgeStore()
    cache = cache if cache is not None else MemoryCache()
    documents = ReadDocument(store, ReadContent(NoContentSources(), cache), cache)
    return BuiltinToolRegistry(
        CachedKnowledgeSearch(store, cache),
        documents,
        tasks if tasks is not None else MemoryTaskRepository(),
        clock,
        renders=renders,
    )
