"""SBA benchmarks: full AG-UI runs over loopback against a real server process.

The server runs on core 0, this load generator on core 1. Each run goes the whole way: API-key
auth, the tenant rate limiter, persistence of thread, message and run, the event log, SSE, and
the answer persisted at the end. The load-test model streams N tokens (`forwardedProps.bench`).
Every scenario is measured on each topology (the embedded one, SQLite with in-process limiter
and event log, and the production one, Postgres with row-level security plus Redis), and each
table gives the ratio of a topology's figure to the SQLite one from the same invocation.

    python bench/run.py [--scenario throughput|ttfe|tools|held|index|render|workers|...]
                        [--quick] [--topologies sqlite postgres+redis] [--env KEY=VALUE ...]

Results: Markdown tables printed and written to bench/results/latest*.md, and a JSON line
appended to bench/results/history.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TERMINAL = (b'"type":"RUN_FINISHED"', b'"type":"RUN_ERROR"')
CHUNKED_END = b"\r\n0\r\n\r\n"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is installed with the server
    uvloop = None

Row = dict[str, Any]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ratio(value: object, base: object) -> float:
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return float("nan")
    return float(value) / float(base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))


def _stat_fields(pid: int) -> list[bytes]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (a server with several worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree so far (utime and stime, all threads)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:  # exited between the scan and the read
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of the process tree, KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class ServerStartFailed(SystemExit):
    """The server process exited (or never answered) at start; the message ends with its
    last words."""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    env: dict[str, str]
    log: Path
    own_data: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)


@dataclass(frozen=True)
class Topology:
    """Where a server keeps its state: `key` names it in the JSON record."""

    name: str
    key: str
    label: str
    postgres: bool
    redis: bool


TOPOLOGIES = {
    t.name: t
    for t in (
        Topology("sqlite", "sqlite", "SQLite", postgres=False, redis=False),
        Topology("postgres+redis", "postgres_redis", "Postgres + Redis", postgres=True, redis=True),
        Topology("postgres", "postgres", "Postgres", postgres=True, redis=False),
        Topology("redis", "redis", "SQLite + Redis", postgres=False, redis=True),
    )
}


def postgres_database(admin_dsn: str) -> tuple[str, str] | None:
    """A fresh, migrated database for the Postgres rows: (SQLAlchemy URL, name), or None when
    Postgres is not reachable."""
    import asyncpg

    name = f"sba_bench_{os.getpid()}_{int(time.time())}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"Postgres rows skipped: {admin_dsn} is not reachable ({exc})", file=sys.stderr)
        return None
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    migrated = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "db", "upgrade"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "SBA_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    if migrated.returncode != 0:
        drop_postgres_database(admin_dsn, name)
        raise SystemExit(f"sba db upgrade failed on {name}: {migrated.stderr[-2000:]}")
    return url, name


def drop_postgres_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


async def redis_reachable(url: str) -> bool:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        return bool(await client.ping())
    except (OSError, RedisError) as exc:
        print(f"Redis rows skipped: {url} is not reachable ({exc})", file=sys.stderr)
        return False
    finally:
        await client.aclose()


async def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


# Topologies whose Postgres has autovacuum off (some development and CI servers): the bench
# analyzes their database itself, as autovacuum would in any deployment, or the figures would be
# those of a schema Postgres never gathered statistics for.
AUTOVACUUM_STAND_IN: set[str] = set()
ANALYZE_EVERY_S = 30.0


async def autovacuum_on(admin_dsn: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        return str(await conn.fetchval("SHOW autovacuum")) == "on"
    finally:
        await conn.close()


async def analyze_forever(admin_dsn: str, database: str) -> None:
    """``ANALYZE`` of the bench database now and then every ``ANALYZE_EVERY_S``: autovacuum's
    analyze of tables that grow by thousands of rows a minute (its naptime is a minute). The
    first, of the new database's nearly empty tables, tells the planner they have been looked
    at: it then sizes them by their pages as they grow rather than assuming a few rows."""
    import asyncpg

    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{database}"
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                await conn.execute("ANALYZE")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"ANALYZE of {database} failed: {exc}", file=sys.stderr)
        await asyncio.sleep(ANALYZE_EVERY_S)


@dataclass
class Provisioned:
    """A topology's backing stores for one invocation, removed by `cleanup`."""

    topology: Topology
    env: dict[str, str]
    cleanup: Callable[[], Awaitable[None]]


async def provision(
    topology: Topology, args: argparse.Namespace, extra: dict[str, str]
) -> Provisioned | None:
    """A data directory of its own (the SQLite file, artifacts), and when the topology asks
    for them a fresh migrated Postgres database and a fresh Redis key prefix; None when one
    of them is not reachable."""
    env = {**extra}
    data = tempfile.mkdtemp(prefix=f"sba-bench-{topology.key}-")
    env.setdefault("SBA_DATA_DIR", data)
    database: str | None = None
    prefix: str | None = None

    async def drop_stores() -> None:
        shutil.rmtree(data, ignore_errors=True)
        if database is not None:
            await asyncio.to_thread(drop_postgres_database, args.postgres, database)
        if prefix is not None:
            await drop_redis_prefix(args.redis, prefix)

    analyzer: asyncio.Task[None] | None = None

    async def cleanup() -> None:
        if analyzer is not None:
            analyzer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await analyzer
        await drop_stores()

    try:
        if topology.redis:
            if not await redis_reachable(args.redis):
                await cleanup()
                return None
            prefix = f"sbabench:{os.getpid()}:{topology.key}:"
            env |= {"SBA_REDIS_URL": args.redis, "SBA_REDIS__KEY_PREFIX": prefix}
        if topology.postgres:
            made = await asyncio.to_thread(postgres_database, args.postgres)
            if made is None:
                await cleanup()
                return None
            env["SBA_DATABASE_URL"], database = made
            if not await autovacuum_on(args.postgres):
                analyzer = asyncio.get_running_loop().create_task(
                    analyze_forever(args.postgres, database)
                )
                AUTOVACUUM_STAND_IN.add(topology.label)
    except BaseException:
        await cleanup()
        raise
    return Provisioned(topology, env, cleanup)


def serve_supports_workers() -> bool:
    """Whether `sba serve` takes --workers (several server processes on one port)."""
    out = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "serve", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
    )
    return "--workers" in out.stdout


def start_server(
    extra_env: dict[str, str], *, workers: int | None = None, cores: set[int] | None = None
) -> Server:
    """A server on a free port, pinned to `cores` (default: core 0), with `--workers` passed
    through when given; its stderr goes to a file so that a chatty server never blocks."""
    own_data = None if "SBA_DATA_DIR" in extra_env else tempfile.mkdtemp(prefix="sba-bench-")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_LLM__LOADTEST": "true",
        # Limits high enough never to refuse, so their cost is measured and not their effect.
        "SBA_RATE_LIMIT__DEFAULT_PER_MINUTE": "100000000",
        "SBA_RATE_LIMIT__ADDRESS_PER_MINUTE": "100000000",
        "SBA_RATE_LIMIT__CONCURRENT_RUNS": "1000000",
        "SBA_LOG__LEVEL": "WARNING",
        **({"SBA_DATA_DIR": own_data} if own_data else {}),
        **extra_env,
    }
    port = free_port()
    affinity = cores or {0}

    def pin_server() -> None:
        raise_nofile()
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, affinity)

    handle, name = tempfile.mkstemp(prefix="sba-bench-server-", suffix=".log")
    os.close(handle)
    log = Path(name)
    command = [
        sys.executable,
        "-m",
        "entrypoints.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    with log.open("wb") as err:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pin_server
        )
    deadline = time.monotonic() + 60
    while True:
        exited = process.poll() is not None
        if exited or time.monotonic() > deadline:
            if not exited:
                process.kill()
                process.wait()
            said = log.read_text()[-2000:]
            log.unlink(missing_ok=True)
            if own_data:
                shutil.rmtree(own_data, ignore_errors=True)
            what = "exited" if exited else "did not answer /healthz"
            raise ServerStartFailed(f"server {what}: {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(1024):
                    break
        except OSError:
            pass
        time.sleep(0.05)
    # Several workers: wait until each process exists (each then answers within its warm-up).
    while workers and len(process_tree(process.pid)) <= workers and time.monotonic() < deadline:
        time.sleep(0.1)
    key = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "entrypoints.cli.main",
                "apikey",
                "create",
                "--tenant",
                "demo",
                "--role",
                "admin",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return Server(process, port, key, env, log, own_data)


# What the servers logged at WARNING or above since the last scenario: a topology that fell
# back (a limiter failing open, events not reaching Redis) still answers every run, and its
# figures would be taken for the topology's own.
SERVER_WARNINGS: list[str] = []


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    try:
        said = server.log.read_text(errors="replace").splitlines()
    except OSError:
        said = []
    for line in said:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            SERVER_WARNINGS.append(f"{entry.get('logger')}: {entry.get('message')}")
    server.log.unlink(missing_ok=True)
    if server.own_data:
        shutil.rmtree(server.own_data, ignore_errors=True)


@dataclass
class RunResult:
    ttfe: float
    total: float
    ok: bool


@dataclass
class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection doing one run at a time."""

    transport: asyncio.Transport | None = None
    buf: bytearray = field(default_factory=bytearray)
    waiter: asyncio.Future[RunResult] | None = None
    sent_at: float = 0.0
    first_at: float = 0.0
    head_done: bool = False
    status_ok: bool = False
    closed: asyncio.Future[None] | None = None
    stop_at_first: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if self.closed and not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status_ok = buf.startswith(b"HTTP/1.1 200")
            self.head_done = True
            if not self.status_ok:
                self._finish(False)
                return
        if not self.first_at and b"data: " in buf:
            self.first_at = time.perf_counter()
            if self.stop_at_first:
                self._finish(True)
                return
        if buf.endswith(CHUNKED_END):
            self._finish(any(t in buf for t in TERMINAL[:1]))

    def _finish(self, ok: bool) -> None:
        now = time.perf_counter()
        result = RunResult(
            ttfe=(self.first_at or now) - self.sent_at, total=now - self.sent_at, ok=ok
        )
        if not self.status_ok:
            # Error answers carry a body with a length: drop the connection instead of parsing.
            assert self.transport is not None
            self.transport.close()
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(result)

    def request(self, request: bytes, *, stop_at_first: bool = False) -> asyncio.Future[RunResult]:
        self.buf = bytearray()
        self.head_done = False
        self.first_at = 0.0
        self.stop_at_first = stop_at_first
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter


def run_request(
    port: int, key: str, run_id: str, tokens: int, delay_ms: float, *, text: str | None = None
) -> bytes:
    # A run with its own text goes to the offline model (and its tools); otherwise the script.
    body = json.dumps(
        {
            "threadId": f"th-{run_id}",
            "runId": run_id,
            "messages": [{"id": f"u-{run_id}", "role": "user", "content": text or "hi"}],
            "state": {},
            "tools": [],
            "context": [],
            "forwardedProps": {} if text else {"bench": {"tokens": tokens, "delay_ms": delay_ms}},
        },
        separators=(",", ":"),
    ).encode()
    return (
        b"POST /v1/agents/assistant/runs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n" % (port, key.encode(), len(body))
    ) + body


async def connect(port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Conn, "127.0.0.1", port)
    return conn


_run_counter = 0


def next_run_id(prefix: str) -> str:
    global _run_counter
    _run_counter += 1
    return f"{prefix}-{os.getpid()}-{_run_counter}"


def cpu_per_run(cpu_s: float, runs: int) -> float:
    return cpu_s * 1000 / runs if runs else float("nan")


async def throughput(
    server: Server, clients: int, duration: float, warmup: float, tokens: int
) -> Row:
    results: list[RunResult] = []
    errors = 0
    measuring = False
    cpu_start = 0.0
    stop_at = time.perf_counter() + warmup + duration

    async def client(i: int) -> None:
        nonlocal errors
        conn = await connect(server.port)
        while time.perf_counter() < stop_at:
            request = run_request(server.port, server.key, next_run_id(f"c{i}"), tokens, 0)
            try:
                result = await conn.request(request)
            except ConnectionError:
                errors += measuring
                conn = await connect(server.port)
                continue
            if measuring:
                if result.ok:
                    results.append(result)
                else:
                    errors += 1
            if not result.ok and not conn.status_ok:
                conn = await connect(server.port)
        assert conn.transport is not None
        conn.transport.close()

    async def clock() -> None:
        nonlocal measuring, cpu_start
        await asyncio.sleep(warmup)
        cpu_start = server.cpu()
        measuring = True

    started = time.perf_counter()
    await asyncio.gather(clock(), *(client(i) for i in range(clients)))
    cpu = server.cpu() - cpu_start
    elapsed = time.perf_counter() - started - warmup
    ttfe = [r.ttfe * 1000 for r in results]
    total = [r.total * 1000 for r in results]
    return {
        "clients": clients,
        "runs_per_s": len(results) / elapsed,
        "errors": errors,
        "ttfe_p50_ms": pct(ttfe, 50),
        "ttfe_p99_ms": pct(ttfe, 99),
        "run_p50_ms": pct(total, 50),
        "run_p99_ms": pct(total, 99),
        "cpu_ms_per_run": cpu_per_run(cpu, len(results)),
        "server_cpu_pct": cpu / elapsed * 100,
    }


async def sequential_ttfe(server: Server, runs: int, tokens: int) -> Row:
    conn = await connect(server.port)
    for _ in range(50):  # warm-up
        await conn.request(run_request(server.port, server.key, next_run_id("w"), tokens, 0))
    ttfe = []
    errors = 0
    cpu_start = server.cpu()
    for _ in range(runs):
        result = await conn.request(
            run_request(server.port, server.key, next_run_id("s"), tokens, 0)
        )
        if result.ok:
            ttfe.append(result.ttfe * 1000)
        else:
            errors += 1
    cpu = server.cpu() - cpu_start
    assert conn.transport is not None
    conn.transport.close()
    return {
        "runs": runs,
        "errors": errors,
        "ttfe_p50_ms": pct(ttfe, 50),
        "ttfe_p99_ms": pct(ttfe, 99),
        "ttfe_max_ms": max(ttfe) if ttfe else float("nan"),
        "ttfe_mean_ms": statistics.fmean(ttfe) if ttfe else float("nan"),
        "cpu_ms_per_run": cpu_per_run(cpu, len(ttfe)),
    }


async def tool_runs(server: Server, runs: int) -> Row:
    """Sequential runs that each make one backend tool call (kb_search over the seeded
    knowledge base) and answer with its result: model turn, tool, model turn."""
    conn = await connect(server.port)
    text = '/tool kb_search {"query": "refund policy"}'
    for _ in range(30):
        await conn.request(run_request(server.port, server.key, next_run_id("tw"), 0, 0, text=text))
    total: list[float] = []
    errors = 0
    cpu_start = server.cpu()
    for _ in range(runs):
        result = await conn.request(
            run_request(server.port, server.key, next_run_id("t"), 0, 0, text=text)
        )
        if result.ok:
            total.append(result.total * 1000)
        else:
            errors += 1
    cpu = server.cpu() - cpu_start
    assert conn.transport is not None
    conn.transport.close()
    return {
        "runs": runs,
        "errors": errors,
        "run_p50_ms": pct(total, 50),
        "run_p95_ms": pct(total, 95),
        "run_p99_ms": pct(total, 99),
        "cpu_ms_per_run": cpu_per_run(cpu, len(total)),
    }


class Stream(asyncio.Protocol):
    """One held run on a connection of its own: the answer's status, and its SSE frames
    counted by their `id:` lines until RUN_FINISHED or RUN_ERROR."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bool] = loop.create_future()  # first frame, or refused
        self.done: asyncio.Future[None] = loop.create_future()  # terminal frame, or lost
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.status = 0
        self.retry_after = False
        self.pending = b""
        self.frames = 0
        self.last_id = 0
        self.terminal = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self.head[:end]), bytes(self.head[end + 4 :])
            self.head = bytearray()
            self.status = int(head[9:12])
            if self.status != 200:
                self.retry_after = b"\r\nretry-after:" in head.lower()
                self.close()
                return
        # Each chunk holds whole frames; chunk-size lines and blank lines are skipped.
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            if line.startswith(b"id: "):
                self.frames += 1
                self.last_id = int(line[4:])
                if not self.opened.done():
                    self.opened.set_result(True)
            elif line.startswith(b"data: ") and (TERMINAL[0] in line or TERMINAL[1] in line):
                self.terminal = TERMINAL[0] if TERMINAL[0] in line else TERMINAL[1]
                self.done.set_result(None)
                self.close()
                return


async def open_stream(port: int, request: bytes) -> Stream:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(Stream, "127.0.0.1", port)
    assert stream.transport is not None
    stream.transport.write(request)
    return stream


@dataclass(frozen=True)
class HeldPlan:
    """How each held run streams (tokens, `delay_ms` apart) and the time bounds."""

    tokens: int
    delay_ms: float
    probe_runs: int
    probe_tokens: int
    wave: int = 500
    wave_timeout_s: float = 20.0
    ramp_limit_s: float = 90.0
    grace_s: float = 10.0


async def held_streams(server: Server, count: int, plan: HeldPlan) -> Row:
    """`count` runs opened in waves, each on its own connection, streaming slowly; while they
    are all held, sequential probe runs from one more client; then each held stream read to
    its end (or the hold time plus a grace period), its frames counted."""
    # Warm the process up so the baseline includes everything a first run allocates.
    warm = await connect(server.port)
    for _ in range(20):
        await warm.request(run_request(server.port, server.key, next_run_id("hw"), 2, 0))
    assert warm.transport is not None
    warm.transport.close()
    # What one run of this shape emits, unhurried: the denominator of the delivered ratio.
    reference = await open_stream(
        server.port, run_request(server.port, server.key, next_run_id("hr"), plan.tokens, 0)
    )
    await asyncio.wait_for(reference.done, 30)
    if not reference.terminal or reference.frames != reference.last_id:
        raise SystemExit(
            f"held: a reference run gave {reference.frames} frames, last id "
            f"{reference.last_id}, terminal {reference.terminal!r}: event ids are not 1..n"
        )
    emitted_each = reference.frames
    await asyncio.sleep(0.5)
    before = rss_kib(server.pid)

    statuses: Counter[str] = Counter()  # answered with an error status
    other: Counter[str] = Counter()  # not held for another reason
    retry_after = 0
    held: list[Stream] = []
    began = time.perf_counter()
    for start in range(0, count, plan.wave):
        if time.perf_counter() - began > plan.ramp_limit_s:
            other["not sent"] += count - start
            break
        batch = min(plan.wave, count - start)
        opened = await asyncio.gather(
            *(
                open_stream(
                    server.port,
                    run_request(
                        server.port, server.key, next_run_id("h"), plan.tokens, plan.delay_ms
                    ),
                )
                for _ in range(batch)
            ),
            return_exceptions=True,
        )
        streams = [s for s in opened if isinstance(s, Stream)]
        for failure in opened:
            if isinstance(failure, BaseException):
                other[f"connect {type(failure).__name__}"] += 1
        if streams:
            await asyncio.wait([s.opened for s in streams], timeout=plan.wave_timeout_s)
        for s in streams:
            if s.opened.done() and s.opened.result():
                held.append(s)
                continue
            s.close()
            if s.status and s.status != 200:
                statuses[str(s.status)] += 1
                retry_after += s.retry_after
            elif s.status == 200:
                other["200 without events"] += 1
            else:
                other["no answer" if not s.opened.done() else "closed"] += 1
    ramp_s = time.perf_counter() - began
    hold_s = (plan.tokens - 1) * plan.delay_ms / 1000
    await asyncio.sleep(0.5)
    after = rss_kib(server.pid)
    open_at_probe = sum(1 for s in held if not s.done.done())

    # The probe: fresh runs, one after another, while the held streams are still streaming.
    probe: list[float] = []
    probe_errors = 0
    probe_until = began + hold_s - 1.0
    conn = await connect(server.port)
    while len(probe) + probe_errors < plan.probe_runs and time.perf_counter() < probe_until:
        request = run_request(server.port, server.key, next_run_id("p"), plan.probe_tokens, 0)
        result = await conn.request(request)
        if not result.ok:
            probe_errors += 1
            if not conn.status_ok:
                conn = await connect(server.port)
            continue
        probe.append(result.ttfe * 1000)
    assert conn.transport is not None
    conn.transport.close()

    pending = [s.done for s in held if not s.done.done()]
    if pending:
        end = began + ramp_s + hold_s + plan.grace_s
        await asyncio.wait(pending, timeout=max(0.0, end - time.perf_counter()))
    finished = sum(1 for s in held if s.terminal == TERMINAL[0])
    delivered = sum(s.frames for s in held)
    emitted = sum(s.last_id if s.terminal else emitted_each for s in held)
    for s in held:
        s.close()
    holding = len(held)
    return {
        "requested": count,
        "held": holding,
        "failures": count - holding,
        "refused": sum(statuses.values()),
        "statuses": ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "-",
        "retry_after": retry_after,
        "other": ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "-",
        "ramp_s": ramp_s,
        "open_at_probe": open_at_probe,
        "finished": finished,
        "delivered": delivered / emitted if emitted else float("nan"),
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_stream": (after - before) / holding if holding else float("nan"),
        "probe_runs": len(probe),
        "probe_errors": probe_errors,
        "probe_p50_ms": pct(probe, 50),
        "probe_p99_ms": pct(probe, 99),
    }


async def tool_overhead(samples: int = 20_000) -> Row:
    """In-process cost of InvokeTool around a tool that does nothing: policy check, argument
    validation against the schema, timeout guard and audit record."""
    sys.path.insert(0, str(ROOT / "src"))
    from adapters.memory.cache import MemoryCache
    from adapters.memory.knowledge import MemoryKnowledgeStore
    from adapters.memory.tools import MemoryTaskRepository, MemoryToolAudit, StaticToolPolicy
    from adapters.tools.builtin import BuiltinToolRegistry
    from application.content.use_cases import ReadContent, ReadDocument
    from application.knowledge.use_cases import CachedKnowledgeSearch
    from application.tools.ports import ToolContext

    class _NoSources:
        def for_tenant(self, tenant_slug: str) -> None:
            return None

    from application.tools.use_cases import InvokeTool

    class Clock:
        def now_ms(self) -> int:
            return 0

    store, cache = MemoryKnowledgeStore(), MemoryCache()
    documents = ReadDocument(store, ReadContent(_NoSources(), cache), cache)
    registry = BuiltinToolRegistry(
        CachedKnowledgeSearch(store, cache), documents, MemoryTaskRepository(), Clock()
    )
    invoke = InvokeTool(registry, StaticToolPolicy(["*"], {}), MemoryToolAudit(), Clock())
    ctx = ToolContext(tenant_id="t", tenant_slug="t", subject="s", run_id="r")  # type: ignore[arg-type]

    async def measure() -> list[float]:
        out = []
        for _ in range(samples):
            t = time.perf_counter()
            await invoke(ctx, "list_tasks", '{"limit": 5}')
            out.append((time.perf_counter() - t) * 1e6)
        return out

    lat = await measure()
    return {
        "calls": samples,
        "p50_us": pct(lat, 50),
        "p95_us": pct(lat, 95),
        "p99_us": pct(lat, 99),
    }


WORDS = [
    "invoice",
    "payment",
    "refund",
    "order",
    "customer",
    "supplier",
    "contract",
    "warranty",
    "delivery",
    "shipping",
    "account",
    "balance",
    "tax",
    "discount",
    "policy",
    "employee",
    "vacation",
    "leave",
    "onboarding",
    "security",
    "password",
    "access",
    "report",
    "quarter",
    "revenue",
    "margin",
    "budget",
    "forecast",
    "inventory",
    "stock",
]


def document_body(n: int, words: int) -> str:
    """A deterministic Markdown document of about `words` words in sections of paragraphs."""
    out, count, section = [f"# Document {n}\n"], 0, 0
    while count < words:
        section += 1
        out.append(f"\n## Section {section}\n")
        for p in range(3):
            sentence = " ".join(
                WORDS[(n * 7 + section * 13 + p * 3 + i) % len(WORDS)] for i in range(60)
            )
            out.append(f"\n{sentence.capitalize()}.\n")
            count += 60
    return "".join(out)


async def indexing(server: Server, documents: int, words: int, clients: int) -> Row:
    """Documents ingested through the API and indexed (validated, saved, chunked, chunks and
    terms written); with the embedded in-process queue a document is indexed when its POST
    returns, which is checked on every response."""
    import httpx

    bodies = [
        json.dumps(
            {
                "id": f"bench-{clients}-{i}",
                "title": f"Bench document {i}",
                "content": document_body(i, words),
            }
        ).encode()
        for i in range(documents)
    ]
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    chunks = 0
    queue = list(range(documents))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=60
    ) as http:

        async def worker() -> None:
            nonlocal errors, chunks
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                r = await http.post("/v1/kb/documents", content=bodies[i])
                latencies.append((time.perf_counter() - t) * 1000)
                doc = r.json() if r.status_code in (200, 201) else {}
                index = doc.get("index", {})
                if index.get("state") != "indexed":
                    errors += 1
                else:
                    chunks += index.get("chunks", 0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "documents": documents,
        "words_each": words,
        "errors": errors,
        "documents_per_s": documents / elapsed,
        "chunks_per_s": chunks / elapsed,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
    }


INVOICE = (
    "inline:# Invoice {{ number }}\n\nCustomer: **{{ customer }}**\n\n"
    "| item | qty | price |\n| --- | --- | --- |\n"
    "{% for l in lines %}| {{ l.item }} | {{ l.qty }} | {{ '%.2f' % l.price }} |\n{% endfor %}"
    "\nTotal: {{ '%.2f' % (lines | sum(attribute='price')) }}\n"
)


async def render_latency(server: Server, renders: int, formats: list[str]) -> Row:
    """Sequential renders through the API, request to done (template rendered in the sandbox,
    converted, artifacts stored, state saved), then one artifact downloaded by its signed link."""
    import httpx

    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    data = {
        "number": 1042,
        "customer": "Toko Maju",
        "lines": [{"item": f"Item {i}", "qty": i % 5 + 1, "price": 10.5 * i} for i in range(20)],
    }
    body = json.dumps({"template": INVOICE, "data": data, "formats": formats}).encode()
    latencies: list[float] = []
    downloads: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=60
    ) as http:
        for i in range(renders + 20):
            t = time.perf_counter()
            r = await http.post("/v1/renders", content=body)
            made = (time.perf_counter() - t) * 1000
            out = r.json() if r.status_code in (201, 202) else {}
            if out.get("state") != "done":
                errors += 1
                continue
            t = time.perf_counter()
            got = await http.get(out["artifacts"][-1]["url"], headers={"Authorization": ""})
            fetched = (time.perf_counter() - t) * 1000
            if got.status_code != 200:
                errors += 1
            if i >= 20:  # the first twenty warm the process up
                latencies.append(made)
                downloads.append(fetched)
    return {
        "formats": "+".join(formats),
        "renders": renders,
        "errors": errors,
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99),
        "download_p50_ms": pct(downloads, 50),
    }


def table(title: str, rows: list[Row]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, "")
            cells.append(
                "-"
                if isinstance(v, float) and v != v
                else f"{v:.3f}"
                if isinstance(v, float) and v < 10
                else f"{v:,.0f}"
                if isinstance(v, float)
                else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Comparison:
    """How a scenario's rows are compared across topologies: rows with equal `match` columns
    are paired, and each `ratios` column gets a ratio column (this topology ÷ SQLite) after it."""

    match: tuple[str, ...]
    ratios: dict[str, str]


COMPARISONS = {
    "throughput": Comparison(
        ("clients",), {"runs_per_s": "vs_sqlite", "cpu_ms_per_run": "cpu_vs_sqlite"}
    ),
    "ttfe": Comparison((), {"ttfe_p50_ms": "vs_sqlite", "cpu_ms_per_run": "cpu_vs_sqlite"}),
    "tool_runs": Comparison((), {"run_p50_ms": "vs_sqlite", "cpu_ms_per_run": "cpu_vs_sqlite"}),
    "held_levels": Comparison(
        ("requested",), {"kib_per_stream": "rss_vs_sqlite", "probe_p99_ms": "probe_vs_sqlite"}
    ),
    "index": Comparison(("clients",), {"documents_per_s": "vs_sqlite"}),
    "render": Comparison(("formats",), {"p50_ms": "vs_sqlite"}),
    "workers": Comparison(
        ("processes", "clients"), {"runs_per_s": "vs_sqlite", "cpu_ms_per_run": "cpu_vs_sqlite"}
    ),
}


def compared(scenario: str, rows: list[Row], base: list[Row] | None) -> list[Row]:
    """`rows` with the ratio columns of `scenario` filled against `base` (the SQLite rows of
    the same invocation); NaN where SQLite has no matching row."""
    spec = COMPARISONS[scenario]
    by_match = {tuple(r.get(k) for k in spec.match): r for r in base or ()}
    out = []
    for row in rows:
        pair = by_match.get(tuple(row.get(k) for k in spec.match))
        augmented: Row = {}
        for k, v in row.items():
            augmented[k] = v
            if k in spec.ratios:
                augmented[spec.ratios[k]] = ratio(v, pair.get(k)) if pair else float("nan")
        out.append(augmented)
    return out


SERVER_SCENARIOS = ("throughput", "ttfe", "tools", "held", "index", "render", "workers")


def worker_cores() -> set[int]:
    return set(range(os.cpu_count() or 1))


async def with_server(
    env: dict[str, str], measure: Callable[[Server], Awaitable[Any]], **options: Any
) -> Any:
    server = await asyncio.to_thread(start_server, env, **options)
    try:
        return await measure(server)
    finally:
        await asyncio.to_thread(stop_server, server)


async def measure_scenario(
    scenario: str, env: dict[str, str], args: argparse.Namespace, quick: bool
) -> dict[str, Any]:
    """One scenario on one topology, each on a fresh server process (the topology's stores
    persist across scenarios, as they would in a deployment); the record's entries."""
    duration, warmup = (3.0, 1.0) if quick else (args.duration, 2.0)

    async def runs(server: Server) -> list[Row]:
        return [await throughput(server, c, duration, warmup, args.tokens) for c in args.clients]

    if scenario == "throughput":
        return {"throughput": await with_server(env, runs)}
    if scenario == "ttfe":
        return {
            "ttfe": await with_server(
                env, lambda s: sequential_ttfe(s, 300 if quick else 2000, args.tokens)
            )
        }
    if scenario == "tools":
        return {"tool_runs": await with_server(env, lambda s: tool_runs(s, 200 if quick else 1000))}
    if scenario == "index":

        async def index(server: Server) -> list[Row]:
            return [
                await indexing(server, 100 if quick else 1000, 1000, clients) for clients in (1, 8)
            ]

        return {"index": await with_server(env, index)}
    if scenario == "render":

        async def render(server: Server) -> list[Row]:
            return [
                await render_latency(server, 100 if quick else 1000, formats)
                for formats in (["markdown", "html"], ["markdown", "html", "pdf"])
            ]

        return {"render": await with_server(env, render)}
    if scenario == "held":
        plan = HeldPlan(
            tokens=args.held_tokens or (10 if quick else 30),
            delay_ms=args.held_delay_ms,
            probe_runs=50 if quick else 200,
            probe_tokens=args.tokens,
        )
        levels = args.held or ([200, 500] if quick else [1000, 5000, 10000])
        rows: list[Row] = []
        for count in levels:  # a fresh server each, so that RSS starts from the same place

            async def hold(server: Server, count: int = count) -> Row:
                return await held_streams(server, count, plan)

            rows.append(await with_server(env, hold))
        return {"held": rows[-1], "held_levels": rows}
    if scenario == "workers":
        if not args.serve_workers:
            return {}
        clients = [c for c in args.clients if c > 1] or args.clients
        rows = []
        # Several processes first: a topology the server will not run that way (several
        # processes need shared limits and streams) is then skipped with the server's reason.
        for processes in (args.workers, 1):
            options: dict[str, Any] = (
                {} if processes == 1 else {"workers": processes, "cores": worker_cores()}
            )

            async def pair(server: Server, processes: int = processes) -> list[Row]:
                return [
                    {
                        "processes": processes,
                        **await throughput(server, c, duration, warmup, args.tokens),
                    }
                    for c in clients
                ]

            try:
                rows += await with_server(env, pair, **options)
            except ServerStartFailed as exc:
                said = [line.strip() for line in str(exc.code).splitlines() if line.strip()]
                # The error line of a traceback, or the server's own refusal, else the last.
                named = [s for s in said if s.startswith("sba:") or "Error:" in s.split(" ")[0]]
                reason = (named or said or ["no message"])[-1][:300]
                return {"notes": [f"{processes} server processes refused to start: {reason}"]}
        rows.sort(key=lambda r: (r["processes"], r["clients"]))
        one = {r["clients"]: r for r in rows if r["processes"] == 1}
        paired = []
        for r in rows:
            base = one.get(r["clients"], {})
            out: Row = {}
            for k, v in r.items():
                out[k] = v
                if k == "runs_per_s":
                    out["vs_1_process"] = ratio(v, base.get("runs_per_s"))
            paired.append(out)
        return {"workers": paired}
    raise ValueError(scenario)


TITLES = {
    "throughput": "Full runs, {tokens} tokens each",
    "ttfe": "Time to first event, one client, sequential runs",
    "tool_runs": "Runs with one backend tool call (kb_search), sequential",
    "held_levels": "Held streams: each run streams {held_tokens} tokens {held_delay_ms:g} ms "
    "apart on a connection of its own; a probe client runs {tokens}-token runs meanwhile",
    "index": "Knowledge indexing through the API (ingest, chunk, index)",
    "render": "Render latency, request to done, sequential",
    "workers": "Server processes: 1 process on core 0 vs {workers} processes (`sba serve "
    "--workers {workers}`) on cores {cores}, sharing core 1 with the load generator; "
    "{tokens}-token runs",
}


def topology_tables(
    scenario_keys: list[str],
    measured: list[tuple[Topology, dict[str, Any]]],
    args: argparse.Namespace,
    quick: bool,
) -> list[str]:
    """One table per scenario, a block of rows per topology, ratios to the SQLite rows."""
    base = next((found for t, found in measured if t.name == "sqlite"), None)
    sections = []
    for key in scenario_keys:
        rows: list[Row] = []
        for topology, found in measured:
            got = found.get(key)
            if got is None:
                continue
            own = got if isinstance(got, list) else [got]
            reference = base.get(key) if base is not None else None
            reference_rows = (
                reference if isinstance(reference, list) else [reference] if reference else None
            )
            for row in compared(key, own, reference_rows):
                rows.append({"topology": topology.label, **row})
        if rows:
            title = TITLES[key].format(
                tokens=args.tokens,
                held_tokens=args.held_tokens or (10 if quick else 30),
                held_delay_ms=args.held_delay_ms,
                workers=args.workers,
                cores=",".join(str(c) for c in sorted(worker_cores())),
            )
            sections.append(table(title, rows))
    return sections


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def limiter_decisions(url: str, seconds: float) -> list[Row]:
    """Rate-limit decisions straight through the adapters (tenant and key counters in one
    atomic decision, as every request makes): decisions/s and latency, on Redis and in memory."""
    sys.path.insert(0, str(ROOT / "src"))
    from adapters.memory.rate_limiter import MemoryRateLimiter
    from adapters.redis.client import RedisStore, create_client
    from adapters.redis.rate_limiter import RedisRateLimiter
    from application.quota.ports import RateCheck
    from domain.quota.rate_limit import RateLimitRule

    rule = RateLimitRule.sliding(limit=100_000_000, window_s=60, burst_ratio=0.2)
    checks = [
        RateCheck(policy="tenant", key="runs", rule=rule),
        RateCheck(policy="key", key="runs:p:k", rule=rule),
    ]
    prefix = f"sbabench:{os.getpid()}:"
    store = RedisStore(create_client(url, max_connections=128), prefix=prefix)
    rows = []
    try:
        for name, limiter in (("redis", RedisRateLimiter(store)), ("memory", MemoryRateLimiter())):
            for concurrency in (1, 32):
                lat: list[float] = []
                stop = time.perf_counter() + seconds

                async def worker(i: int, limiter=limiter, lat=lat, stop=stop) -> None:
                    partition = f"t:{i % 8}"
                    while time.perf_counter() < stop:
                        t = time.perf_counter()
                        await limiter.hit(partition, checks)
                        lat.append((time.perf_counter() - t) * 1e6)

                began = time.perf_counter()
                await asyncio.gather(*(worker(i) for i in range(concurrency)))
                rows.append(
                    {
                        "store": name,
                        "concurrency": concurrency,
                        "decisions_per_s": len(lat) / (time.perf_counter() - began),
                        "p50_us": pct(lat, 50),
                        "p99_us": pct(lat, 99),
                    }
                )
    finally:
        await store.close()
        await drop_redis_prefix(url, prefix)
    return rows


def start_sink() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    return sink, port


def sink_count(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    return int(json.loads(raw.partition(b"\r\n\r\n")[2])["spans"])


async def telemetry_overhead(samples: int = 50_000) -> list[dict[str, float | str]]:
    """In process, the HTTP edge's own cost per streamed request (request id, context, counts,
    time to first event) with nothing, metrics, and metrics plus a recorded span (exported in
    batches to a collector that drops them), in microseconds."""
    sys.path.insert(0, str(ROOT / "src"))
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from adapters.observability.asgi import ObservedASGI
    from adapters.observability.metrics import Metrics

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    async def app(scope: dict, receive: object, send: object) -> None:
        scope["path_template"] = "/v1/agents/{agent}/runs"
        start = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": start})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # type: ignore[operator]

    async def send(message: object) -> None:
        return None

    async def receive() -> dict:
        return {}

    headers = [(b"host", b"x"), (b"authorization", b"Bearer k"), (b"accept", b"text/event-stream")]

    async def per_request(handler: object) -> float:
        def scope() -> dict:
            return {
                "type": "http",
                "method": "POST",
                "path": "/v1/agents/a/runs",
                "headers": headers,
            }

        for _ in range(2000):
            await handler(scope(), receive, send)  # type: ignore[operator]
        started = time.perf_counter()
        for _ in range(samples):
            await handler(scope(), receive, send)  # type: ignore[operator]
        return (time.perf_counter() - started) / samples * 1e6

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 20))
    bare = await per_request(app)
    rows: list[dict[str, float | str]] = []
    for name, handler in (
        ("edge, metrics off", ObservedASGI(app, tracer=None, metrics=None)),
        ("edge + metrics", ObservedASGI(app, tracer=None, metrics=Metrics())),
        (
            "edge + metrics + server span",
            ObservedASGI(app, tracer=provider.get_tracer("b"), metrics=Metrics()),
        ),
    ):
        us = await per_request(handler)
        rows.append({"edge": name, "us_per_request": us, "added_us": us - bare})
    provider.shutdown()
    return rows


async def telemetry_rows(
    args: argparse.Namespace, extra: dict[str, str], quick: bool, record: dict[str, object]
) -> list[str]:
    """The same full runs with telemetry off, metrics only, and metrics with every span (or
    one trace in ten) exported over OTLP to a collector stand-in in another process."""
    sink, sink_port = start_sink()
    off = {"SBA_TELEMETRY__METRICS": "false", "SBA_TELEMETRY__TRACES": "none"}
    otlp = {
        "SBA_TELEMETRY__TRACES": "otlp",
        "SBA_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
        # A queue deep enough that no span is dropped: every one is paid for.
        "OTEL_BSP_MAX_QUEUE_SIZE": "262144",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    configs = [
        ("off (no metrics, no traces)", off),
        ("metrics (the default)", {"SBA_TELEMETRY__TRACES": "none"}),
        ("metrics + traces, 10 % sampled", {**otlp, "SBA_TELEMETRY__SAMPLE_RATIO": "0.1"}),
        ("metrics + traces, all", otlp),
        (
            "metrics + traces, all, no statement spans",
            {**otlp, "SBA_TELEMETRY__TRACE_STATEMENTS": "false"},
        ),
    ]
    rows = []
    try:
        for name, env in configs:
            before = sink_count(sink_port)
            server = await asyncio.to_thread(start_server, {**extra, **env})
            try:
                row: dict[str, float | str] = {"telemetry": name}
                for clients in (1, 16):
                    got = await throughput(
                        server,
                        clients,
                        3 if quick else args.duration,
                        1 if quick else 2,
                        args.tokens,
                    )
                    row[f"runs_per_s_{clients}"] = got["runs_per_s"]
                    row[f"cpu_ms_per_run_{clients}"] = got["cpu_ms_per_run"]
                ttfe = await sequential_ttfe(server, 300 if quick else 2000, args.tokens)
                row["ttfe_p50_ms"] = ttfe["ttfe_p50_ms"]
                row["ttfe_p99_ms"] = ttfe["ttfe_p99_ms"]
            finally:
                stop_server(server)
            row["spans_exported"] = sink_count(sink_port) - before
            rows.append(row)
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    record["telemetry"] = rows
    edge = await telemetry_overhead(10_000 if quick else 50_000)
    record["telemetry_edge"] = edge
    return [
        table(f"Cost of telemetry on full runs, {args.tokens} tokens", rows),
        table("The HTTP edge's telemetry in process, per streamed request (µs)", edge),
    ]


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    extra = dict(kv.split("=", 1) for kv in args.env)
    scenarios = (
        ["throughput", "ttfe", "tools", "held", "index", "render", "workers", "telemetry"]
        if args.scenario == "all"
        else [args.scenario]
    )
    quick = args.quick
    notes: list[str] = []
    args.serve_workers = "workers" in scenarios and serve_supports_workers()
    if "workers" in scenarios and not args.serve_workers:
        notes.append(
            "server processes: skipped, `sba serve` has no `--workers` option in this commit"
        )
    topologies = []
    for name in dict.fromkeys(args.topologies):
        topology = TOPOLOGIES[name]
        if (topology.postgres and not args.postgres) or (topology.redis and not args.redis):
            notes.append(f"{topology.label}: skipped (--postgres '' or --redis '')")
            continue
        topologies.append(topology)
    sections: list[str] = []
    record: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "env": extra,
    }
    on_server = [
        s for s in scenarios if s in SERVER_SCENARIOS and (s != "workers" or args.serve_workers)
    ]
    provisioned: list[Provisioned] = []
    measured: list[tuple[Topology, dict[str, Any]]] = []
    try:
        if on_server:
            for topology in topologies:
                made = await provision(topology, args, extra)
                if made is None:
                    notes.append(f"{topology.label}: skipped, not reachable")
                    continue
                provisioned.append(made)
                measured.append((topology, {}))
        # Scenario by scenario, each topology in turn: the ratios compare figures taken
        # minutes apart, not a whole bench apart, on a machine others may be using.
        for scenario in on_server:
            for made, (topology, found) in zip(provisioned, measured, strict=True):
                SERVER_WARNINGS.clear()
                got = await measure_scenario(scenario, made.env, args, quick)
                notes.extend(f"{topology.label}: {n}" for n in got.pop("notes", ()))
                if SERVER_WARNINGS:
                    first = "; ".join(dict.fromkeys(w[:200] for w in SERVER_WARNINGS[:50]))
                    notes.append(
                        f"{topology.label}, {scenario}: the server logged "
                        f"{len(SERVER_WARNINGS)} warnings or errors (first: {first[:600]})"
                    )
                found.update(got)
    finally:
        for made in provisioned:
            await made.cleanup()
    record["topologies"] = [t.key for t, _ in measured]
    for topology, found in measured:
        if topology.name == "sqlite":
            record.update(found)
    base = next((found for t, found in measured if t.name == "sqlite"), {})
    for topology, found in measured:
        if topology.name == "sqlite":
            continue
        entry: dict[str, Any] = {}
        for key, value in found.items():
            if key not in COMPARISONS:  # "held": the largest level, as in held_levels
                entry[key] = value
            elif isinstance(value, list):
                entry[key] = compared(key, value, base.get(key))
            else:
                entry[key] = compared(key, [value], [base[key]] if key in base else None)[0]
        record[topology.key] = entry
    sections += topology_tables(
        ["throughput", "ttfe", "tool_runs", "held_levels", "index", "render", "workers"],
        measured,
        args,
        quick,
    )
    if "telemetry" in scenarios:
        sections.extend(await telemetry_rows(args, extra, quick, record))
    if "throughput" in scenarios and any(t.redis for t, _ in measured):
        try:
            decisions = await limiter_decisions(args.redis, 1.0 if quick else 5.0)
        except (ImportError, TypeError, AttributeError) as exc:
            # In process against the adapters' own API: a change there must not cost the
            # figures measured so far.
            notes.append(f"rate-limit decisions: skipped, the limiter API differs ({exc!r})")
        else:
            sections.append(
                table("Rate-limit decisions (tenant + key, one atomic step)", decisions)
            )
            record["limiter"] = decisions
    if "tools" in scenarios:
        row = await tool_overhead(5_000 if quick else 20_000)
        sections.append(table("Tool invocation overhead in process (policy, schema, audit)", [row]))
        record["tool_overhead"] = row
    base_label = (
        ", ".join(f"{k}={v}" for k, v in extra.items()) + " (SQLite rows)"
        if extra
        else "embedded defaults"
    )
    described = {
        "sqlite": "SQLite: the embedded database, limiter, run caps and event log in process",
        "postgres_redis": "Postgres + Redis: a fresh migrated database, row-level security "
        "forced, the application role; limiter, run caps, event log and idempotency on Redis "
        "under a fresh key prefix (both unpinned, beside the two cores)",
        "postgres": "Postgres: a fresh migrated database, row-level security forced; limiter, "
        "run caps and event log in process",
        "redis": "SQLite + Redis: the embedded database; limiter, run caps, event log and "
        "idempotency on Redis under a fresh key prefix",
    }
    notes += [
        f"{label}: this Postgres runs with autovacuum off, so the bench runs ANALYZE on its "
        f"database once it is made and then every {ANALYZE_EVERY_S:g} s, as autovacuum would"
        for label in sorted(AUTOVACUUM_STAND_IN)
    ]
    lines = [f"- {described[t.key]}" for t, _ in measured] + [f"- {n}" for n in notes]
    header = (
        f"# SBA benchmark\n\n- date: {record['date']}\n- commit: {record['commit']}\n"
        f"- python: {record['python']}\n- backend: {base_label}\n"
        f"- server pinned to core 0, load generator to core 1; loopback; keep-alive HTTP/1.1\n"
        f"- cpu_ms_per_run: the server process's user + system CPU over the measured window "
        f"÷ runs completed in it; `vs_sqlite` columns: this topology's figure ÷ SQLite's\n"
        + "".join(line + "\n" for line in lines)
        + "\n"
    )
    report = header + "\n".join(sections)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A single scenario keeps the full table: it goes to a file of its own.
    name = "latest" if args.scenario == "all" else f"latest-{args.scenario}"
    (RESULTS / (f"{name}-quick.md" if quick else f"{name}.md")).write_text(report)
    with (RESULTS / "history.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        default="all",
        choices=["all", *SERVER_SCENARIOS, "telemetry"],
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument(
        "--held",
        type=int,
        nargs="+",
        default=None,
        help="held-stream levels (default 1000 5000 10000; --quick: 200 500)",
    )
    parser.add_argument(
        "--held-tokens",
        type=int,
        default=None,
        help="tokens per held run (default 30; --quick: 10)",
    )
    parser.add_argument(
        "--held-delay-ms", type=float, default=1000.0, help="pause between a held run's tokens"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes for the `workers` scenario (passed to `sba serve --workers`)",
    )
    parser.add_argument(
        "--topologies",
        nargs="+",
        choices=list(TOPOLOGIES),
        default=["sqlite", "postgres+redis"],
        help="where the server keeps its state; ratios are to sqlite",
    )
    parser.add_argument("--env", action="append", default=[], help="extra server KEY=VALUE")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "SBA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin DSN for the Postgres topologies (a fresh database is made and dropped); "
        "'' skips them",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("SBA_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        help="Redis URL for the Redis topologies (keys under a bench prefix, removed); "
        "'' skips them",
    )
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers must be 2 or more (1 process is the row it is compared with)")
    if uvloop is not None:
        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
