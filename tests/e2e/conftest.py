"""A real server process for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import unavailable

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).resolve().parent / "node"


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    api_key: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sba(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrypoints.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)  # polling for readiness, not hiding a race
    process.kill()
    raise RuntimeError("server did not become ready within 30 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("sba-e2e")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(data),
        "SBA_LLM__LOADTEST": "true",
        "SBA_HTTP__HEARTBEAT_S": "0.2",
    }
    port = free_port()
    process = start_server(env, port)
    try:
        key = sba("apikey", "create", "--tenant", "demo", "--role", "admin", env=env)
        yield LiveServer(
            f"http://127.0.0.1:{port}", key.stdout.strip().splitlines()[-1], env, process
        )
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def node() -> list[str]:
    exe = shutil.which("node")
    if exe is None:
        unavailable("node is not installed: the @ag-ui/client conformance tests need it")
    if not (NODE_DIR / "node_modules" / "@ag-ui" / "client").is_dir():
        unavailable("tests/e2e/node has no node_modules: run `just node-deps`")
    return [str(exe), str(NODE_DIR / "run_agent.mjs")]
