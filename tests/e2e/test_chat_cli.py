"""`sba chat` against a real server: a person types questions on stdin and reads the streamed
answer, the tool calls with their arguments and results, the citations, and approves or rejects
an interrupt."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveServer, free_port, sba, start_server, stop_server

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose create_task waits for a person's approval."""
    data = tmp_path_factory.mktemp("sba-chat")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SBA_")},
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(data),
        "SBA_TOOLS__APPROVAL": '["create_task"]',
        "SBA_HTTP__HEARTBEAT_S": "0.5",
    }
    port = free_port()
    process = start_server(env, port, data / "server.log")
    try:
        key = sba("apikey", "create", "--tenant", "demo", "--role", "admin", env=env)
        yield LiveServer(
            f"http://127.0.0.1:{port}", key.stdout.strip().splitlines()[-1], env, process
        )
    finally:
        stop_server(process)


def chat(server: LiveServer, typed: str, *args: str, key_in_env: bool = False):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SBA_")},
        "PYTHONPATH": str(ROOT / "src"),
        "COLUMNS": "200",
    }
    command = [sys.executable, "-m", "entrypoints.cli.main", "chat", "--url", server.base_url]
    if key_in_env:
        env["SBA_API_KEY"] = server.api_key
    else:
        command += ["--key", server.api_key]
    return subprocess.run(
        [*command, *args], input=typed, env=env, capture_output=True, text=True, timeout=120
    )


def tasks(server: LiveServer) -> list[dict]:
    response = httpx.get(
        f"{server.base_url}/v1/tasks",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    return response.json()["tasks"]


def test_a_question_streams_an_answer_with_its_citations(server: LiveServer) -> None:
    done = chat(server, "How long do refunds take?\n\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "assistant> You asked: \u201cHow long do refunds take?\u201d" in out
    assert "Here is what your knowledge base says" in out
    assert "\nSources:\n[1] " in out and "citations [1] " in out


def test_tool_calls_show_their_arguments_results_and_the_passages_they_cite(
    server: LiveServer,
) -> None:
    typed = '/tool kb_search {"query": "shipping", "limit": 2}\n\n'
    done = chat(server, typed, key_in_env=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'tool call kb_search {"query": "shipping", "limit": 2}' in out
    assert "tool result {" in out and '"documentId"' in out
    assert "cites [1] " in out


def test_an_approved_interrupt_runs_the_tool_and_a_rejected_one_does_not(
    server: LiveServer,
) -> None:
    typed = (
        '/tool create_task {"title": "Call Ana back"}\ny\n'
        '/tool create_task {"title": "Never do this"}\nn\n\n'
    )
    done = chat(server, typed, "--thread", "chat-approvals")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("approval needed") == 2
    assert 'create_task {"title": "Call Ana back"}' in out
    assert "approved" in out and "rejected" in out
    titles = [t["title"] for t in tasks(server)]
    assert "Call Ana back" in titles and "Never do this" not in titles
    # The same thread continues in a later session, with its history.
    again = chat(server, "What about shipping?\n\n", "--thread", "chat-approvals")
    assert again.returncode == 0, again.stderr
    assert "thread chat-approvals" in again.stdout and "assistant>" in again.stdout


def test_without_a_key_it_says_how_to_give_one(server: LiveServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBA_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "chat", "--url", server.base_url],
        input="hi\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "SBA_API_KEY" in done.stdout


def test_a_wrong_key_is_reported_not_a_traceback(server: LiveServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBA_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "entrypoints.cli.main",
            "chat",
            "--url",
            server.base_url,
            "--key",
            "sba_000000000000_wrong",
        ],
        input="hi\n\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "401" in done.stdout and "Traceback" not in done.stderr
