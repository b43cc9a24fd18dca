"""Chat models that need no network and no weights: the offline responder and the scripted
load-test model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from application.conversation.ports import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    TextChunk,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
    UsageChunk,
)
from application.knowledge.ports import KnowledgeSearch
from domain.conversation.model import Message, Role, Usage
from domain.ids import new_id

_TOKEN = re.compile(r"\S+\s*|\s+")
_TOOL_COMMAND = re.compile(r"^/tool\s+(?P<name>[A-Za-z0-9_.-]+)\s*(?P<args>.*)$", re.DOTALL)
_CREATE_TASK = re.compile(
    r"^(?:please\s+)?(?:create|add|make)\s+(?:a\s+)?task(?:\s+to|:)?\s+(?P<title>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_LIST_TASKS = re.compile(r"\b(?:list|show)\b.*\btasks\b", re.IGNORECASE)
_HEADING = re.compile(r"(?:^|(?<=\s))#{1,6}\s")

# The name usage is recorded under when no model chain names this model.
OFFLINE = "offline"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _count_input_tokens(request: ChatRequest) -> int:
    return sum(len(_tokens(m.content)) for m in request.messages)


class OfflineChatModel:
    """Deterministic: the same conversation and knowledge base always yield the same answer,
    streamed a word at a time. It answers from the tenant's knowledge base with numbered
    citations, or says plainly that it found nothing, so a first run is useful with no
    provider configured."""

    def __init__(
        self, *, knowledge: KnowledgeSearch | None = None, token_delay_s: float = 0.0
    ) -> None:
        self._knowledge = knowledge
        self._delay = token_delay_s

    def tool_call(self, request: ChatRequest) -> tuple[str, str] | None:
        """The tool to call, if any: ``/tool NAME {json}`` calls any tool (the registry judges
        it), and a few plain requests call the task tools when they are offered. Only a user
        message that has not been answered yet asks for a call."""
        if not request.messages or request.messages[-1].role is not Role.USER:
            return None
        text = request.messages[-1].content.strip()
        match = _TOOL_COMMAND.match(text)
        if match:
            return match["name"], (match["args"] or "{}").strip()
        offered = {t.name for t in request.tools}
        intent = _CREATE_TASK.match(text)
        if intent and "create_task" in offered:
            return "create_task", json.dumps({"title": intent["title"].strip().rstrip(".")})
        if _LIST_TASKS.search(text) and "list_tasks" in offered:
            return "list_tasks", "{}"
        return None

    def tool_report(self, request: ChatRequest) -> str | None:
        """After tools ran: what they returned, for the person to read."""
        results: list[Message] = []
        for message in reversed(request.messages):
            if message.role is Role.TOOL:
                results.append(message)
            else:
                break
        if not results:
            return None
        names = {c.id: c.name for m in request.messages for c in m.tool_calls}
        lines = []
        for result in reversed(results):
            name = names.get(result.tool_call_id or "", "the tool")
            content = result.content if len(result.content) <= 600 else result.content[:597] + "..."
            lines.append(f"{name} returned: {content}")
        return "\n".join(lines)

    async def answer(self, request: ChatRequest) -> str:
        report = self.tool_report(request)
        if report is not None:
            return report
        question = ""
        for message in reversed(request.messages):
            if message.role is Role.USER:
                question = " ".join(message.content.split())
                break
        shown = question if len(question) <= 200 else question[:197] + "..."
        hits = (
            await self._knowledge.search(request.tenant_id, question, limit=3)
            if self._knowledge is not None and question
            else []
        )
        opening = f"You asked: \u201c{shown}\u201d." if shown else "Hello!"
        # Cite only passages that match nearly as well as the best one.
        hits = [h for h in hits if h.score >= hits[0].score * 0.5] if hits else []
        if hits:
            found = [f"{opening} Here is what your knowledge base says:"]
            for n, hit in enumerate(hits, 1):
                passage = " ".join(_HEADING.sub(" ", hit.snippet).split())
                found.append(f"\n\n[{n}] {passage}")
            found.append("\n\nSources:")
            for n, hit in enumerate(hits, 1):
                where = f" ({hit.source})" if hit.source else ""
                found.append(f"\n[{n}] {hit.title}{where}")
            return "".join(found)
        lines = [
            opening,
            "I found nothing about that in your knowledge base." if question else "",
            "I am SBA's offline assistant: I run inside this server with no language model "
            "and no network, so my answers are deterministic.",
            "I answer from your workspace's knowledge base, call business tools, and stream "
            "every step to your app over AG-UI.",
            "Connect an OpenAI-compatible or Anthropic model in the settings for open-ended "
            "answers.",
        ]
        return " ".join(line for line in lines if line)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        call = self.tool_call(request)
        if call is not None:
            name, arguments = call
            call_id = f"call_{new_id('t')}"
            yield ToolCallStarted(call_id, name)
            # Arguments arrive in pieces, as they do from a real provider.
            for start in range(0, len(arguments), 16):
                yield ToolCallDelta(call_id, arguments[start : start + 16])
            yield ToolCallEnded(call_id)
            yield UsageChunk(
                Usage(input_tokens=_count_input_tokens(request), output_tokens=1), OFFLINE
            )
            return
        tokens = _tokens(await self.answer(request))
        for token in tokens:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield TextChunk(token)
        yield UsageChunk(
            Usage(input_tokens=_count_input_tokens(request), output_tokens=len(tokens)), OFFLINE
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

    def __init__(self, fallback: ChatModel) -> None:
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
        yield UsageChunk(
            Usage(input_tokens=_count_input_tokens(request), output_tokens=count), OFFLINE
        )
