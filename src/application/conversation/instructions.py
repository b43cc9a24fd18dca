"""The agent's instructions to a real model: one system message, first in every request, that
has it search the tenant's knowledge base before answering, cite what it used by number, say
so when nothing was found, and answer in the tenant's language.

The offline model needs none (it grounds and cites by construction). A tenant may replace the
instructions with its own; the language rule is kept either way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from application.conversation.ports import ChatChunk, ChatModel, ChatRequest
from domain.conversation.model import Message, Role
from domain.ids import MessageId

DEFAULT_INSTRUCTIONS = """\
You are the business assistant of this organisation, answering its customers and staff.
Be brief, concrete and polite. Never invent prices, policies, dates or names."""

KNOWLEDGE_RULES = """\
Before you answer a question about the organisation (its products, prices, policies, \
procedures, people), call the kb_search tool with the question's key words, and call \
get_document when a passage is not enough. Answer from what the tools returned. Cite every \
passage you use with its number in square brackets, [1], [2], as the results number them, and \
end with a "Sources" list of the cited titles. When the knowledge base has nothing relevant, \
say so plainly and do not guess."""

ANY_LANGUAGE = "Answer in the language the person writes in."


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantInstructions:
    """A tenant's own instructions (None: the deployment's) and language (None: the
    deployment's; empty: the person's own)."""

    instructions: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInstructions:
    instructions: str = DEFAULT_INSTRUCTIONS
    # The language answers are given in; empty: the language the person writes in.
    language: str = ""
    tenants: Mapping[str, TenantInstructions] = field(default_factory=dict)

    def for_request(self, request: ChatRequest) -> str:
        own = self.tenants.get(request.tenant_slug, TenantInstructions())
        parts = [own.instructions if own.instructions is not None else self.instructions]
        if any(t.name == "kb_search" for t in request.tools):
            parts.append(KNOWLEDGE_RULES)
        language = own.language if own.language is not None else self.language
        parts.append(f"Always answer in {language}." if language else ANY_LANGUAGE)
        return "\n\n".join(p.strip() for p in parts if p.strip())


class InstructedChatModel:
    """A model that gets the agent's instructions as the first message of every request."""

    def __init__(self, inner: ChatModel, instructions: AgentInstructions) -> None:
        self._inner = inner
        self._instructions = instructions

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        system = Message(
            id=MessageId("sba-instructions"),
            role=Role.SYSTEM,
            content=self._instructions.for_request(request),
        )
        return self._inner.stream(replace(request, messages=(system, *request.messages)))
