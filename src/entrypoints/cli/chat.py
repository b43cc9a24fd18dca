"""``sba chat``: a terminal client that speaks AG-UI to a server, as any client app would.

It posts each question as a run (``POST /v1/agents/assistant/runs``) carrying the thread's
history, renders the event stream as it arrives (text, tool calls with their arguments and
results, the sources cited), asks the person to approve or reject an interrupt and answers it in
the next run's ``resume``, and after a dropped connection picks the stream up again from the
last event it saw (``GET /v1/runs/{runId}/events`` with ``Last-Event-ID``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.markup import escape

KEY_VAR = "SBA_API_KEY"
PROTOCOL = "1.0.0"
_SOURCE = re.compile(r"^\[(\d+)\] (.+)$")
_RESUME_ATTEMPTS = 3


@dataclass
class Conversation:
    """What the client holds of a thread: the messages it sends back with every run."""

    thread_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def assistant(self, message_id: str) -> dict[str, Any]:
        for m in reversed(self.messages):
            if m["id"] == message_id:
                return m
        message: dict[str, Any] = {"id": message_id, "role": "assistant", "content": ""}
        self.messages.append(message)
        return message


@dataclass
class RunView:
    """One run's stream as it is read: what the person has seen and what the client keeps."""

    conversation: Conversation
    console: Console
    last_id: str | None = None
    finished: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    open_line: bool = False

    def _newline(self) -> None:
        if self.open_line:
            self.console.print()
            self.open_line = False

    def on(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        c = self.console
        if kind == "TEXT_MESSAGE_START":
            self._newline()
            self.conversation.assistant(event["messageId"])
            self.texts[event["messageId"]] = ""
            c.print("[bold green]assistant>[/] ", end="")
            self.open_line = True
        elif kind == "TEXT_MESSAGE_CONTENT":
            message = self.conversation.assistant(event["messageId"])
            message["content"] = (message.get("content") or "") + event["delta"]
            self.texts[event["messageId"]] = self.texts.get(event["messageId"], "") + event["delta"]
            c.print(event["delta"], end="", markup=False, highlight=False)
            self.open_line = True
        elif kind == "TEXT_MESSAGE_END":
            self._newline()
            self._sources(self.texts.get(event["messageId"], ""))
        elif kind == "TOOL_CALL_START":
            self._newline()
            call = {"id": event["toolCallId"], "name": event["toolCallName"], "arguments": ""}
            self.calls[call["id"]] = call
            parent = event.get("parentMessageId") or f"msg-{call['id']}"
            message = self.conversation.assistant(parent)
            message.setdefault("toolCalls", []).append(
                {"id": call["id"], "type": "function", "function": {"name": call["name"]}}
            )
        elif kind == "TOOL_CALL_ARGS":
            self.calls[event["toolCallId"]]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_END":
            call = self.calls[event["toolCallId"]]
            for m in self.conversation.messages:
                for tc in m.get("toolCalls", ()):
                    if tc["id"] == call["id"]:
                        tc["function"]["arguments"] = call["arguments"]
            c.print(f"[bold cyan]tool call[/] {escape(call['name'])} {escape(call['arguments'])}")
        elif kind == "TOOL_CALL_RESULT":
            self.conversation.messages.append(
                {
                    "id": event["messageId"],
                    "role": "tool",
                    "toolCallId": event["toolCallId"],
                    "content": event["content"],
                }
            )
            self._result(event["content"])
        elif kind == "MESSAGES_SNAPSHOT":
            self.conversation.messages = list(event["messages"])
        elif kind == "RUN_FINISHED":
            self._newline()
            self.finished = event
        elif kind == "RUN_ERROR":
            self._newline()
            self.failed = event
            code = event.get("code", "error")
            c.print(f"[bold red]run failed[/] ({escape(code)}): {escape(event.get('message', ''))}")

    def _result(self, content: str) -> None:
        try:
            value = json.loads(content)
        except ValueError:
            value = content
        shown = content if len(content) <= 400 else content[:397] + "..."
        self.console.print(f"[bold cyan]tool result[/] {escape(shown)}")
        if isinstance(value, dict):
            for hit in value.get("results", ()) if isinstance(value.get("results"), list) else ():
                if isinstance(hit, dict) and hit.get("citation"):
                    self.console.print(f"  [magenta]cites[/] {escape(str(hit['citation']))}")
            downloads = value.get("downloads")
            if isinstance(downloads, dict):
                for fmt, link in downloads.items():
                    self.console.print(f"  [magenta]download[/] {escape(fmt)}: {escape(link)}")

    def _sources(self, text: str) -> None:
        """The sources an answer cites: the numbered lines after its ``Sources:``."""
        _, marker, tail = text.partition("\n\nSources:")
        if not marker:
            return
        cited = [m.groups() for line in tail.splitlines() if (m := _SOURCE.match(line.strip()))]
        if cited:
            names = "; ".join(f"[{n}] {title}" for n, title in cited)
            self.console.print(f"[magenta]citations[/] {escape(names)}")


def _frames(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, event) for each SSE frame; comments (heartbeats) are skipped."""
    frame_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield frame_id, json.loads("\n".join(data))
            frame_id, data = None, []
        elif line.startswith("id:"):
            frame_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield frame_id, json.loads("\n".join(data))


class ChatClient:
    def __init__(self, url: str, key: str, console: Console, *, timeout_s: float = 300.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )
        self.console = console

    def close(self) -> None:
        self._http.close()

    def _read(self, response: httpx.Response, view: RunView) -> None:
        if response.status_code != 200:
            response.read()
            try:
                problem = response.json()
                detail = f"{problem.get('code')}: {problem.get('detail')}"
            except ValueError:
                detail = response.text[:200]
            raise ChatError(f"the server answered {response.status_code} ({detail})")
        for frame_id, event in _frames(response.iter_lines()):
            if frame_id is not None:
                view.last_id = frame_id
            view.on(event)

    def run(
        self, conversation: Conversation, resume: list[dict[str, Any]] | None = None
    ) -> RunView:
        run_id = f"run-{uuid.uuid4().hex[:16]}"
        body: dict[str, Any] = {
            "threadId": conversation.thread_id,
            "runId": run_id,
            "protocolVersion": PROTOCOL,
            "messages": conversation.messages,
            "tools": [],
            "context": [],
            "state": {},
        }
        if resume:
            body["resume"] = resume
        view = RunView(conversation, self.console)
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        try:
            with self._http.stream(
                "POST", "/v1/agents/assistant/runs", json=body, headers=headers
            ) as response:
                self._read(response, view)
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            if view.finished is None and view.failed is None:
                self._resume(run_id, view, exc)
        return view

    def _resume(self, run_id: str, view: RunView, cause: Exception) -> None:
        """The connection dropped mid-run: the run goes on at the server; follow it again from
        the last event seen."""
        for _ in range(_RESUME_ATTEMPTS):
            self.console.print(f"[yellow]connection lost ({type(cause).__name__}); resuming[/]")
            headers = {"Accept": "text/event-stream"}
            if view.last_id is not None:
                headers["Last-Event-ID"] = view.last_id
            try:
                with self._http.stream(
                    "GET", f"/v1/runs/{run_id}/events", headers=headers
                ) as response:
                    self._read(response, view)
                return
            except (httpx.TransportError, json.JSONDecodeError) as exc:
                cause = exc
        raise ChatError(f"the connection to the server keeps failing: {cause}")


class ChatError(Exception):
    pass


def _ask(stdin: TextIO, console: Console, prompt: str) -> str | None:
    console.print(prompt, end="")
    line = stdin.readline()
    if not line:
        console.print()
        return None
    return line.rstrip("\n")


def _decide(view: RunView, stdin: TextIO, console: Console) -> list[dict[str, Any]] | None:
    """The person's answer to each interrupt of a run that ended waiting for one."""
    outcome = (view.finished or {}).get("outcome") or {}
    if outcome.get("type") != "interrupt":
        return None
    answers = []
    for interrupt in outcome.get("interrupts", ()):
        call = view.calls.get(interrupt.get("toolCallId", ""), {})
        console.print(
            f"[bold yellow]approval needed[/] {escape(interrupt.get('message') or '')} "
            f"({escape(call.get('name', 'a tool'))} {escape(call.get('arguments', ''))})"
        )
        reply = _ask(stdin, console, "approve? [y/N] ")
        approved = reply is not None and reply.strip().lower() in ("y", "yes")
        console.print("[green]approved[/]" if approved else "[red]rejected[/]")
        answers.append(
            {"interruptId": interrupt["id"], "status": "resolved" if approved else "cancelled"}
        )
    return answers


def _history(client: ChatClient, thread_id: str) -> list[dict[str, Any]]:
    """The stored messages of a thread to continue (text only: what the model needs)."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = client._http.get(f"/v1/threads/{thread_id}/messages", params=params)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise ChatError(f"cannot read thread {thread_id}: {response.status_code}")
        body = response.json()
        found += [
            {"id": m["id"], "role": m["role"], "content": m["content"]}
            for m in body["messages"]
            if m["role"] in ("user", "assistant")
        ]
        cursor = body.get("nextCursor")
        if not cursor:
            return found


def chat(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, console: Console | None = None
) -> int:
    console = console or Console(highlight=False, soft_wrap=True)
    key = args.key or os.environ.get(KEY_VAR, "")
    if not key:
        console.print(f"[red]sba chat needs an API key: --key KEY or {KEY_VAR}[/]")
        return 2
    client = ChatClient(args.url, key, console)
    conversation = Conversation(thread_id=args.thread or f"thread-{uuid.uuid4().hex[:12]}")
    try:
        if args.thread:
            conversation.messages = _history(client, args.thread)
        console.print(
            f"[dim]thread {escape(conversation.thread_id)} on {escape(args.url)}; "
            "an empty line or Ctrl-D ends[/]"
        )
        while True:
            question = _ask(stdin, console, "[bold blue]you>[/] ")
            if question is None or not question.strip():
                return 0
            conversation.messages.append(
                {"id": f"msg-{uuid.uuid4().hex[:16]}", "role": "user", "content": question}
            )
            view = client.run(conversation)
            while (answers := _decide(view, stdin, console)) is not None:
                view = client.run(conversation, resume=answers)
    except ChatError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 1
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {escape(args.url)}: {escape(str(exc))}[/]")
        return 1
    finally:
        client.close()


def add_chat_command(sub: Any) -> None:
    parser = sub.add_parser(
        "chat", help="chat with the assistant in the terminal (an AG-UI client of a server)"
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--key", default=None, help=f"an API key (default: ${KEY_VAR})")
    parser.add_argument("--thread", default=None, help="continue this thread (default: a new one)")
    parser.set_defaults(handler=lambda settings, args: chat(args))
