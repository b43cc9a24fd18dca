"""AG-UI 1.0 ``RunAgentInput`` as msgspec Structs (camelCase on the wire).

The top level forbids unknown fields so that a misspelt field is a clear 422 instead of being
silently ignored; messages accept every field the 1.0 schema defines, and their content parts
stay open (``dict``) because media parts carry shapes we pass through but do not read.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class _Wire(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    pass


class FunctionCallIn(_Wire, kw_only=True):
    name: str
    arguments: str


class ToolCallIn(_Wire, kw_only=True):
    id: str
    function: FunctionCallIn
    type: Literal["function"] = "function"
    encrypted_value: str | None = None
    metadata: dict[str, Any] | None = None


class _MessageIn(_Wire, tag_field="role", kw_only=True):
    id: str
    name: str | None = None
    encrypted_value: str | None = None
    metadata: dict[str, Any] | None = None
    subagent_run_id: str | None = None


ContentIn = str | list[dict[str, Any]]


class UserMessageIn(_MessageIn, tag="user", kw_only=True):
    content: ContentIn


class AssistantMessageIn(_MessageIn, tag="assistant", kw_only=True):
    content: str | None = None
    tool_calls: list[ToolCallIn] | None = None


class SystemMessageIn(_MessageIn, tag="system", kw_only=True):
    content: str


class DeveloperMessageIn(_MessageIn, tag="developer", kw_only=True):
    content: str


class ToolMessageIn(_MessageIn, tag="tool", kw_only=True):
    content: ContentIn
    tool_call_id: str
    error: str | None = None


class ActivityMessageIn(_MessageIn, tag="activity", kw_only=True):
    activity_type: str
    content: dict[str, Any]


class ReasoningMessageIn(_MessageIn, tag="reasoning", kw_only=True):
    content: str


MessageIn = (
    UserMessageIn
    | AssistantMessageIn
    | SystemMessageIn
    | DeveloperMessageIn
    | ToolMessageIn
    | ActivityMessageIn
    | ReasoningMessageIn
)


class ToolIn(_Wire, kw_only=True):
    name: str
    description: str = ""
    parameters: Any = None


class ContextIn(_Wire, kw_only=True):
    description: str
    value: str


class ResumeIn(_Wire, kw_only=True):
    interrupt_id: str
    status: Literal["resolved", "cancelled"]
    payload: Any = None
    metadata: dict[str, Any] | None = None


class RunAgentInput(_Wire, forbid_unknown_fields=True, kw_only=True):
    thread_id: str
    run_id: str
    messages: list[MessageIn]
    parent_run_id: str | None = None
    protocol_version: str | None = None
    state: Any = None
    tools: list[ToolIn] = []
    context: list[ContextIn] = []
    forwarded_props: Any = None
    resume: list[ResumeIn] | None = None


run_input_decoder = msgspec.json.Decoder(RunAgentInput)


def text_of(content: ContentIn | None) -> str:
    """The text a message carries: the string itself, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        part["text"]
        for part in content
        if part.get("type") == "text" and isinstance(part.get("text"), str)
    )
