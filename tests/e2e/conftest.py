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
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sba {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Starts `sba serve` and returns once /healthz answers 200. Its logs go to a file: an
    undrained pipe would block the server once the pipe buffer filled up."""
    with log.open("ab") as sink:
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
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)  # polling for readiness, not hiding a race
    stop_server(process)
    raise RuntimeError(f"server did not become ready within 30 s:\n{tail(log)}")


def tail(log: Path, size: int = 4000) -> str:
    return log.read_bytes()[-size:].decode(errors="replace")


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
    process = start_server(env, port, tmp_path_factory.mktemp("sba-e2e-logs") / "server.log")
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
    modules = NODE_DIR / "node_modules"
    if not all((modules / name).is_dir() for name in ("@ag-ui/client", "ag-ui-client-legacy")):
        unavailable(
            "tests/e2e/node has no node_modules with both @ag-ui/client generations: "
            "run `just node-deps` (npm ci in tests/e2e/node)"
        )
    return [str(exe), str(NODE_DIR / "run_agent.mjs")]
