"""`sba serve --workers N`: several processes share one port, each accepting connections and
naming itself in its logs; SIGTERM stops them all, ending held streams as complete answers.
Several workers need Redis to share limits, run caps, run streams and idempotency keys."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port, sba, tail
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

pytestmark = pytest.mark.e2e


def serve(env: dict[str, str], port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli.main", "serve", "--port", str(port), *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def workers_of(parent: int) -> list[int]:
    """The server processes the supervisor started (multiprocessing's spawned children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"multiprocessing.spawn" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def established_on(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def until(probe, *, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if value := probe():
                return value
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)  # polling for a condition, not hiding a race
    raise AssertionError(f"{what} did not happen within {within_s} s")


def open_stream(port: int, key: str) -> socket.socket:
    """A run that streams its first token, then holds the stream for a minute."""
    run_id = f"w-{uuid.uuid4().hex[:10]}"
    body = json.dumps(
        {
            "threadId": f"th-{run_id}",
            "runId": run_id,
            "messages": [{"id": f"u-{run_id}", "role": "user", "content": "hold"}],
            "forwardedProps": {"bench": {"tokens": 2, "delay_ms": 60_000}},
        }
    ).encode()
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(
        b"POST /v1/agents/assistant/runs HTTP/1.1\r\nHost: sba\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (key.encode(), len(body), body)
    )
    received = b""
    while b"TEXT_MESSAGE_CONTENT" not in received:
        chunk = conn.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return conn


METRICS_TOKEN = "metrics-token-for-tests"


def free_ports(count: int, *, avoid: int = 0) -> int:
    """The first of ``count`` consecutive free ports, none of them ``avoid``."""
    for _ in range(100):
        first = free_port()
        if first <= avoid < first + count:
            continue
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        return first
    raise AssertionError("no run of free ports")


def open_streams(metrics_port: int) -> int:
    text = httpx.get(
        f"http://127.0.0.1:{metrics_port}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=5,
    ).text
    match = re.search(r"^sba_active_streams ([0-9.]+)$", text, re.MULTILINE)
    assert match, text[:500]
    return int(float(match.group(1)))


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_to_end(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
        if received.endswith(b"0\r\n\r\n"):
            break
    return received


@pytest.fixture
def redis_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require_redis()
    prefix = new_prefix()
    yield {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(tmp_path / "data"),
        "SBA_REDIS_URL": REDIS_URL,
        "SBA_REDIS__KEY_PREFIX": prefix,
        "SBA_LLM__LOADTEST": "true",
        "SBA_RUNS__SHUTDOWN_GRACE_S": "1",
    }
    import asyncio

    asyncio.run(drop_prefix(REDIS_URL, prefix))


def test_several_workers_without_redis_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SBA_DATA_DIR": str(tmp_path)}
    env.pop("SBA_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SBA_REDIS_URL" in done.stderr and "2 workers" in done.stderr


def test_two_workers_share_the_port_and_sigterm_stops_them_all(
    tmp_path: Path, redis_env: dict[str, str]
) -> None:
    port = free_port()
    metrics_port = free_ports(2, avoid=port)
    log = tmp_path / "server.log"
    env = {
        **redis_env,
        "SBA_TELEMETRY__METRICS_PORT": str(metrics_port),
        "SBA_TELEMETRY__METRICS_TOKEN": METRICS_TOKEN,
    }
    server = serve(env, port, log, "--workers", "2")
    streams: list[socket.socket] = []
    try:
        workers = until(
            lambda: w if len(w := workers_of(server.pid)) == 2 else None,
            within_s=60,
            what="two worker processes",
        )
        # Each worker says it serves, under its own pid.
        until(
            lambda: all(f'"worker":{pid}' in log.read_text() for pid in workers),
            within_s=60,
            what=f"a serving line from each worker:\n{tail(log)}",
        )
        for pid in workers:
            assert re.search(rf"worker {pid} of 2 serving", log.read_text())
        until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            within_s=30,
            what="health",
        )
        key = sba("apikey", "create", "--tenant", "demo", env=redis_env).stdout.split()[-1]
        # Streams are held until both workers have accepted some of them.
        for _ in range(40):
            streams.append(open_stream(port, key))
            if all(established_on(pid, port) for pid in workers):
                break
        held = {pid: established_on(pid, port) for pid in workers}
        assert all(held.values()), held
        # Each worker's metrics on a port of its own: together they see every stream.
        assert sum(open_streams(metrics_port + i) for i in range(2)) == len(streams)

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert not [pid for pid in workers if running(pid)]
        # Every held stream ended as a complete answer; no request failed on the way out.
        for conn in streams:
            assert read_to_end(conn).endswith(b"0\r\n\r\n")
        assert "Exception in ASGI application" not in log.read_text(), tail(log)
    finally:
        for conn in streams:
            conn.close()
        if server.poll() is None:
            server.kill()
            server.wait()
