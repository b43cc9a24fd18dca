"""Chat models that need no network and no weights: the offline responder and the scripted
load-test model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from application.conversation.ports import ChatChunk, ChatRequest, TextChunk, UsageChunk
from domain.conversation.model import Role, Usage

_TOKEN = re.compile(r"\S+\s*|\s+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _count_input_tokens(request: ChatRequest) -> int:
    return sum(len(_tokens(m.content)) for m in request.messages)


class OfflineChatModel:
    """Deterministic: the same conversation always yields the same answer, streamed a word at a
    time. It explains what it can do and restates the question so a first run is useful with no
    provider configured."""

    def __init__(self, *, token_delay_s: float = 0.0) -> None:
        self._delay = token_delay_s

    def answer(self, request: ChatRequest) -> str:
        question = ""
        for message in reversed(request.messages):
            if message.role is Role.USER:
                question = " ".join(message.content.split())
                break
        if len(question) > 200:
            question = question[:197] + "..."
        turns = sum(1 for m in request.messages if m.role is Role.USER)
        lines = [
            f"You asked: \u201c{question}\u201d." if question else "Hello!",
            "I am SBA's offline assistant: I run inside this server with no language model "
            "and no network, so my answers are deterministic.",
            "I can answer from your workspace's knowledge base, call business tools, and "
            "stream every step to your app over AG-UI.",
            "Connect an OpenAI-compatible or Anthropic model in the settings for open-ended "
            "answers.",
        ]
        if turns > 1:
            lines.append(f"This is turn {turns} of our conversation.")
        return " ".join(lines)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        tokens = _tokens(self.answer(request))
        for token in tokens:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield TextChunk(token)
        yield UsageChunk(
            Usage(input_tokens=_count_input_tokens(request), output_tokens=len(tokens))
        )


def bench_script(forwarded_props: Mapping[str, Any]) -> tuple[int, float] | None:
    """Reads ``{"bench": {"tokens": N, "delay_ms": D}}``; None when absent or malformed."""
    bench = forwarded_props.get("bench") if isinstance(forwarded_props, Mapping) else None
    if not isinstance(bench, Mapping):
        return None
    tokens, delay_ms = bench.get("tokens", 50), bench.get("delay_ms", 0)
    valid = (
        isinstance(tokens, int)
        and not isinstance(tokens, bool)
        and 0 <= tokens <= 100_000
        and isinstance(delay_ms, int | float)
        and not isinstance(delay_ms, bool)
        and 0 <= delay_ms <= 3_600_000
    )
    return (tokens, delay_ms / 1000) if valid else None


class LoadTestChatModel:
    """Streams ``tok0 tok1 …`` as scripted by the run's ``forwardedProps.bench``, and hands any
    other run to ``fallback``. Enabled only by ``SBA_LLM__LOADTEST=true``; it exists so that our
    figures compare with other AG-UI servers doing the same work through the full path."""

    def __init__(self, fallback: OfflineChatModel) -> None:
        self._fallback = fallback

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        script = bench_script(request.forwarded_props)
        if script is None:
            async for chunk in self._fallback.stream(request):
                yield chunk
            return
        count, delay = script
        for i in range(count):
            if delay and i:
                await asyncio.sleep(delay)
            yield TextChunk(f"tok{i} " if i + 1 < count else f"tok{i}")
        yield UsageChunk(Usage(input_tokens=_count_input_tokens(request), output_tokens=count))
