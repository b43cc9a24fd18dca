"""The built-in tools: typed handlers whose argument schema comes from a msgspec Struct."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from application.content.use_cases import ReadDocument
from application.conversation.ports import ToolSpec
from application.errors import ApplicationError
from application.json_limits import TOO_DEEP, json_too_deep
from application.knowledge.ports import KnowledgeSearch
from application.ports import Clock
from application.render.use_cases import GetRender, LinkSigner, RenderCommand, RequestRender
from application.tools.ports import TaskRepository, ToolContext, ToolResult
from domain.audit.events import task_created
from domain.errors import DomainError
from domain.ids import new_id
from domain.render.model import RenderJob
from domain.tenancy.model import Principal, Role
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

    # "kb:<document id>", "content:<ref>", or "inline:<Jinja template text>"
    template: str
    data: dict[str, Any] = {}
    formats: list[str] = msgspec.field(default_factory=lambda: ["markdown", "html"])


class RenderTools:
    """What ``render_document`` needs: it queues the render, then waits for it (up to
    ``wait_s``) so the finished render, with its download links, comes back in the run."""

    def __init__(
        self,
        request: RequestRender,
        get: GetRender,
        links: LinkSigner,
        *,
        wait_s: float = 8.0,
        poll_s: float = 0.05,
    ) -> None:
        self.request = request
        self.get = get
        self.links = links
        self.wait_s = wait_s
        self.poll_s = poll_s

    async def render(self, args: RenderDocumentArgs, ctx: ToolContext) -> dict[str, Any]:
        principal = Principal(
            tenant_id=ctx.tenant_id,
            tenant_slug=ctx.tenant_slug,
            subject=ctx.subject,
            role=Role.MEMBER,
        )
        job = await self.request(
            RenderCommand(
                principal=principal, template=args.template, data=args.data, formats=args.formats
            )
        )
        deadline = time.monotonic() + self.wait_s
        while not job.finished and time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            job = await self.get(principal, job.id)
        return self._describe(job)

    def _describe(self, job: RenderJob) -> dict[str, Any]:
        out: dict[str, Any] = {"renderId": job.id, "status": job.state.value}
        if job.error:
            out["error"] = job.error
        if job.state.value == "done":
            out["downloads"] = {
                fmt: self.links.link(job.tenant_id, job.id, fmt)[0] for fmt in job.artifacts
            }
        elif not job.finished:
            out["message"] = f"The render is {job.state.value}; see /v1/renders/{job.id}."
        return out


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
    """``kb_search`` and ``get_document`` (both through the tenant's cache), ``create_task``,
    ``list_tasks`` and ``render_document`` (queues a render and reports it finished, with
    download links, or still queued)."""

    def __init__(
        self,
        knowledge: KnowledgeSearch,
        documents: ReadDocument,
        tasks: TaskRepository,
        clock: Clock,
        *,
        renders: RenderTools | None = None,
    ) -> None:
        self._knowledge = knowledge
        self._documents = documents
        self._tasks = tasks
        self._clock = clock
        self._renders = renders
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
                "Render a document from a template and data into Markdown, HTML or PDF; "
                "returns download links when done.",
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
            problem = TOO_DEEP if json_too_deep(args) else None
        except RecursionError:
            problem = TOO_DEEP
        except msgspec.DecodeError as exc:
            problem = f"the arguments do not match the schema of {name}: {exc}"
        if problem is not None:
            return _result(
                ToolOutcome.INVALID_ARGUMENTS, {"error": "invalid_arguments", "message": problem}
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
        doc = await self._documents(ctx.tenant_id, ctx.tenant_slug, args.document_id)
        if doc is None:
            return {"error": "not_found", "message": f"no document {args.document_id}"}
        return doc

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
        await self._tasks.add(
            task, audit=task_created(task, actor=f"agent:{ctx.agent}", run_id=ctx.run_id)
        )
        return {"taskId": task.id, "title": task.title, "due": task.due, "status": task.status}

    async def _list_tasks(self, args: ListTasksArgs, ctx: ToolContext) -> Any:
        tasks = await self._tasks.list_open(ctx.tenant_id, limit=min(max(args.limit, 1), 100))
        return {
            "tasks": [
                {"taskId": t.id, "title": t.title, "due": t.due, "status": t.status} for t in tasks
            ]
        }

    async def _render_document(self, args: RenderDocumentArgs, ctx: ToolContext) -> Any:
        if self._renders is None:
            return {"error": "unavailable", "message": "rendering is not configured"}
        return await self._renders.render(args, ctx)
