"""The README's examples work as written: its admin API walk-through, run against a server
started with the settings it exports."""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path

from tests.integration.test_http_api import make_api

README = Path(__file__).resolve().parents[2] / "README.md"


def admin_example() -> tuple[dict[str, str], list[list[str]]]:
    """The exported settings and the curl commands (as argument lists) of the admin example."""
    text = README.read_text()
    start = text.index("The same provisioning over HTTP")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block is not None
    env: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
        else:
            assert words[0] == "curl", line
            commands.append(words[1:])
    return env, commands


def request_of(words: list[str], token: str) -> tuple[str, str, dict[str, str], str | None]:
    method, url, headers, data = "GET", "", {}, None
    it = iter(words)
    for word in it:
        if word == "-X":
            method = next(it)
        elif word == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip().replace("$SBA_AUTH__ADMIN_TOKEN", token)
        elif word == "-d":
            data = next(it)
        else:
            url = word
    return method, url.removeprefix("localhost:8000"), headers, data


async def test_the_admin_examples_work_as_written(tmp_path) -> None:
    env, commands = admin_example()
    assert "SBA_AUTH__ADMIN_TOKEN" in env and len(commands) >= 3
    token = secrets.token_hex(32)  # what the example's $(openssl rand -hex 32) makes
    env["SBA_AUTH__ADMIN_TOKEN"] = token
    async for api in make_api(tmp_path, **env):
        for words in commands:
            method, path, headers, data = request_of(words, token)
            answer = await api.client.request(method, path, headers=headers, content=data)
            assert answer.status_code < 300, (method, path, answer.text)
