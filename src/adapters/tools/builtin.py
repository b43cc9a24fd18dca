"""The built-in tools: typed handlers whose argument schema comes from a msgspec Struct."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from application.conversation.ports import ToolSpec
from application.errors import ApplicationError
from application.knowledge.ports import KnowledgeStore
from application.ports import Clock
from application.tools.ports import TaskRepository, ToolContext, ToolResult
from domain.errors import DomainError
from domain.ids import new_id
from domain.tools.model import Task, ToolOutcome

log = logging.getLogger("sba.tools")

A = TypeVar("A", bound=msgspec.Struct)


class KbSearchArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Search the workspace's knowledge base."""

    query: str
    limit: int = 5


class GetDocumentArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Read one knowledge-base document in full."""

    document_id: str


class CreateTaskArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Create a task for the team."""

    title: str
    notes: str = ""
    due: str | None = None


class ListTasksArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """List the team's open tasks, newest first."""

    limit: int = 20


class RenderDocumentArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Render a document from a template and data."""

    template: str
    data: dict[str, Any] = {}


def _schema(args: type[msgspec.Struct]) -> dict[str, Any]:
    schema = msgspec.json.schema(args)
    ref = schema.get("$ref", "")
    inline: dict[str, Any] = schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else schema
    inline = {k: v for k, v in inline.items() if k != "title"}
    inline["additionalProperties"] = False
    return inline


@dataclass(frozen=True, slots=True)
class Tool(Generic[A]):
    name: str
    description: str
    args: type[A]
    handler: Callable[[A, ToolContext], Awaitable[Any]]

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=_schema(self.args))


def _result(outcome: ToolOutcome, payload: Any) -> ToolResult:
    return ToolResult(content=json.dumps(payload, ensure_ascii=False), outcome=outcome)


class BuiltinToolRegistry:
    """``kb_search``, ``get_document``, ``create_task``, ``list_tasks`` and
    ``render_document`` (which accepts and acknowledges the request: the render pipeline that
    carries it out comes with the workers)."""

    def __init__(self, knowledge: KnowledgeStore, tasks: TaskRepository, clock: Clock) -> None:
        self._knowledge = knowledge
        self._tasks = tasks
        self._clock = clock
        tools: list[Tool[Any]] = [
            Tool(
                "kb_search",
                "Search the workspace's knowledge base; returns ranked passages "
                "with their document ids and citations.",
                KbSearchArgs,
                self._kb_search,
            ),
            Tool(
                "get_document",
                "Read one knowledge-base document in full by its id.",
                GetDocumentArgs,
                self._get_document,
            ),
            Tool(
                "create_task",
                "Create a task for the team, with optional notes and due date (YYYY-MM-DD).",
                CreateTaskArgs,
                self._create_task,
            ),
            Tool(
                "list_tasks",
                "List the team's open tasks, newest first.",
                ListTasksArgs,
                self._list_tasks,
            ),
            Tool(
                "render_document",
                "Queue a document render from a template and data.",
                RenderDocumentArgs,
                self._render_document,
            ),
        ]
        self._tools = {t.name: t for t in tools}
        # Schemas are derived once: every run offers them to the model.
        self._specs = [t.spec for t in tools]

    def specs(self) -> list[ToolSpec]:
        return list(self._specs)

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return _result(
                ToolOutcome.UNKNOWN_TOOL,
                {"error": "unknown_tool", "message": f"there is no tool {name!r}"},
            )
        try:
            args = msgspec.json.decode(arguments or "{}", type=tool.args)
        except msgspec.DecodeError as exc:
            return _result(
                ToolOutcome.INVALID_ARGUMENTS,
                {
                    "error": "invalid_arguments",
                    "message": f"the arguments do not match the schema of {name}: {exc}",
                },
            )
        try:
            payload = await tool.handler(args, ctx)
        except (ApplicationError, DomainError) as exc:
            return _result(ToolOutcome.FAILED, {"error": exc.code, "message": exc.message})
        except Exception:
            log.exception("tool %s failed", name)
            return _result(
                ToolOutcome.FAILED, {"error": "tool_failed", "message": f"the tool {name} failed"}
            )
        return _result(ToolOutcome.OK, payload)

    async def _kb_search(self, args: KbSearchArgs, ctx: ToolContext) -> Any:
        limit = min(max(args.limit, 1), 20)
        hits = await self._knowledge.search(ctx.tenant_id, args.query, limit=limit)
        return {
            "results": [
                {
                    "documentId": h.document_id,
                    "title": h.title,
                    "source": h.source,
                    "passage": h.snippet,
                    "citation": f"[{n}] {h.title}",
                }
                for n, h in enumerate(hits, 1)
            ]
        }

    async def _get_document(self, args: GetDocumentArgs, ctx: ToolContext) -> Any:
        doc = await self._knowledge.get(ctx.tenant_id, args.document_id)
        if doc is None:
            return {"error": "not_found", "message": f"no document {args.document_id}"}
        return {
            "documentId": doc.id,
            "title": doc.title,
            "source": doc.source,
            "content": doc.content,
        }

    async def _create_task(self, args: CreateTaskArgs, ctx: ToolContext) -> Any:
        task = Task(
            id=new_id("task"),
            tenant_id=ctx.tenant_id,
            title=args.title.strip(),
            notes=args.notes,
            due=args.due,
            created_by=ctx.subject,
            created_at_ms=self._clock.now_ms(),
        )
        await self._tasks.add(task)
        return {"taskId": task.id, "title": task.title, "due": task.due, "status": task.status}

    async def _list_tasks(self, args: ListTasksArgs, ctx: ToolContext) -> Any:
        tasks = await self._tasks.list_open(ctx.tenant_id, limit=min(max(args.limit, 1), 100))
        return {
            "tasks": [
                {"taskId": t.id, "title": t.title, "due": t.due, "status": t.status} for t in tasks
            ]
        }

    async def _render_document(self, args: RenderDocumentArgs, ctx: ToolContext) -> Any:
        return {
            "status": "accepted",
            "template": args.template,
            "message": "The render request was accepted. Rendering itself arrives with the "
            "render pipeline; no document is produced yet.",
        }
