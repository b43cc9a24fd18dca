"""SBA benchmarks: full AG-UI runs over loopback against a real server process.

The server runs on core 0, this load generator on core 1. Each run goes the whole way: API-key
auth, the tenant rate limiter, persistence of thread, message and run, the event log, SSE, and
the answer persisted at the end. The load-test model streams N tokens (`forwardedProps.bench`).

    python bench/run.py [--scenario throughput|ttfe|held|all] [--quick] [--env KEY=VALUE ...]

Results: a Markdown table printed and written to bench/results/latest.md, and a JSON line
appended to bench/results/history.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TERMINAL = (b'"type":"RUN_FINISHED"', b'"type":"RUN_ERROR"')
CHUNKED_END = b"\r\n0\r\n\r\n"

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is installed with the server
    uvloop = None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    env: dict[str, str]


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
    subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "db", "upgrade"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "SBA_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
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


def start_server(extra_env: dict[str, str]) -> Server:
    data = tempfile.mkdtemp(prefix="sba-bench-")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": data,
        "SBA_LLM__LOADTEST": "true",
        # Limits high enough never to refuse, so their cost is measured and not their effect.
        "SBA_RATE_LIMIT__DEFAULT_PER_MINUTE": "100000000",
        "SBA_RATE_LIMIT__ADDRESS_PER_MINUTE": "100000000",
        "SBA_RATE_LIMIT__CONCURRENT_RUNS": "1000000",
        "SBA_LOG__LEVEL": "WARNING",
        **extra_env,
    }
    port = free_port()

    def pin_server() -> None:
        raise_nofile()
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {0})

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
        preexec_fn=pin_server,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(1024):
                    break
        except OSError:
            time.sleep(0.05)
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
    return Server(process, port, key, env)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


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


async def throughput(
    server: Server, clients: int, duration: float, warmup: float, tokens: int
) -> dict[str, float]:
    results: list[RunResult] = []
    errors = 0
    measuring = False
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
        nonlocal measuring
        await asyncio.sleep(warmup)
        measuring = True

    started = time.perf_counter()
    await asyncio.gather(clock(), *(client(i) for i in range(clients)))
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
    }


async def sequential_ttfe(server: Server, runs: int, tokens: int) -> dict[str, float]:
    conn = await connect(server.port)
    for _ in range(50):  # warm-up
        await conn.request(run_request(server.port, server.key, next_run_id("w"), tokens, 0))
    ttfe = []
    errors = 0
    for _ in range(runs):
        result = await conn.request(
            run_request(server.port, server.key, next_run_id("s"), tokens, 0)
        )
        if result.ok:
            ttfe.append(result.ttfe * 1000)
        else:
            errors += 1
    return {
        "runs": runs,
        "errors": errors,
        "ttfe_p50_ms": pct(ttfe, 50),
        "ttfe_p99_ms": pct(ttfe, 99),
        "ttfe_max_ms": max(ttfe) if ttfe else float("nan"),
        "ttfe_mean_ms": statistics.fmean(ttfe) if ttfe else float("nan"),
    }


async def tool_runs(server: Server, runs: int) -> dict[str, float]:
    """Sequential runs that each make one backend tool call (kb_search over the seeded
    knowledge base) and answer with its result: model turn, tool, model turn."""
    conn = await connect(server.port)
    text = '/tool kb_search {"query": "refund policy"}'
    for _ in range(30):
        await conn.request(run_request(server.port, server.key, next_run_id("tw"), 0, 0, text=text))
    total, errors = [], 0
    for _ in range(runs):
        result = await conn.request(
            run_request(server.port, server.key, next_run_id("t"), 0, 0, text=text)
        )
        if result.ok:
            total.append(result.total * 1000)
        else:
            errors += 1
    return {
        "runs": runs,
        "errors": errors,
        "run_p50_ms": pct(total, 50),
        "run_p95_ms": pct(total, 95),
        "run_p99_ms": pct(total, 99),
    }


async def tool_overhead(samples: int = 20_000) -> dict[str, float]:
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


async def held_streams(server: Server, count: int, wave: int = 500) -> dict[str, float]:
    # Warm the process up so the baseline includes everything a first run allocates.
    warm = await connect(server.port)
    for _ in range(20):
        await warm.request(run_request(server.port, server.key, next_run_id("hw"), 2, 0))
    assert warm.transport is not None
    warm.transport.close()
    await asyncio.sleep(0.5)
    before = rss_kib(server.process.pid)
    held: list[Conn] = []
    failures = 0
    for start in range(0, count, wave):
        batch = min(wave, count - start)
        conns = await asyncio.gather(
            *(connect(server.port) for _ in range(batch)), return_exceptions=True
        )
        waits = []
        for conn in conns:
            if isinstance(conn, BaseException):
                failures += 1
                continue
            held.append(conn)
            # A long pause after the first token keeps the stream (and its run) open.
            request = run_request(server.port, server.key, next_run_id("h"), 2, 600_000)
            waits.append(conn.request(request, stop_at_first=True))
        done = await asyncio.gather(*waits, return_exceptions=True)
        failures += sum(1 for d in done if isinstance(d, BaseException) or not d.ok)
    await asyncio.sleep(1.0)
    after = rss_kib(server.process.pid)
    holding = len(held) - failures
    for conn in held:
        assert conn.transport is not None
        conn.transport.close()
    return {
        "requested": count,
        "held": holding,
        "failures": failures,
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_stream": (after - before) / holding if holding else float("nan"),
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


async def indexing(server: Server, documents: int, words: int, clients: int) -> dict[str, float]:
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


async def render_latency(server: Server, renders: int, formats: list[str]) -> dict[str, float]:
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


def table(title: str, rows: list[dict[str, float]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row[k]
            cells.append(
                f"{v:.3f}"
                if isinstance(v, float) and v < 10
                else f"{v:,.0f}"
                if isinstance(v, float)
                else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


async def postgres_rows(
    args: argparse.Namespace, extra: dict[str, str], quick: bool, record: dict[str, object]
) -> list[str]:
    """The same full runs and first-event latency with Postgres as the database (row-level
    security on, tenant work as the application role). Postgres runs beside the two pinned
    cores, as a database server would."""
    made = await asyncio.to_thread(postgres_database, args.postgres)
    if made is None:
        return []
    url, name = made
    sections = []
    server = await asyncio.to_thread(start_server, {**extra, "SBA_DATABASE_URL": url})
    try:
        rows = [
            await throughput(
                server, c, 3 if quick else args.duration, 1 if quick else 2, args.tokens
            )
            for c in args.clients
        ]
        sections.append(table(f"Full runs on Postgres, {args.tokens} tokens each", rows))
        row = await sequential_ttfe(server, 300 if quick else 2000, args.tokens)
        sections.append(table("Time to first event on Postgres, one client, sequential", [row]))
        record["postgres"] = {"throughput": rows, "ttfe": row}
    finally:
        stop_server(server)
        await asyncio.to_thread(drop_postgres_database, args.postgres, name)
    return sections


async def limiter_decisions(url: str, seconds: float) -> list[dict[str, float]]:
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


async def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


async def redis_rows(
    args: argparse.Namespace, extra: dict[str, str], quick: bool, record: dict[str, object]
) -> list[str]:
    """Full runs with the limiter, run caps, event log and idempotency store on Redis."""
    sections = []
    decisions = await limiter_decisions(args.redis, 1.0 if quick else 5.0)
    sections.append(table("Rate-limit decisions (tenant + key, one atomic step)", decisions))
    record["limiter"] = decisions
    prefix = f"sbabench:{os.getpid()}:run:"
    env = {**extra, "SBA_REDIS_URL": args.redis, "SBA_REDIS__KEY_PREFIX": prefix}
    server = await asyncio.to_thread(start_server, env)
    try:
        rows = [
            await throughput(
                server, c, 3 if quick else args.duration, 1 if quick else 2, args.tokens
            )
            for c in args.clients
        ]
        sections.append(
            table(
                f"Full runs with Redis (limiter, run caps, event log), {args.tokens} tokens", rows
            )
        )
        row = await sequential_ttfe(server, 300 if quick else 2000, args.tokens)
        sections.append(table("Time to first event with Redis, one client, sequential", [row]))
        record["redis"] = {"throughput": rows, "ttfe": row}
    finally:
        stop_server(server)
        await drop_redis_prefix(args.redis, prefix)
    return sections


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
        ["throughput", "ttfe", "tools", "held", "index", "render", "telemetry"]
        if args.scenario == "all"
        else [args.scenario]
    )
    quick = args.quick
    sections: list[str] = []
    record: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "env": extra,
    }
    server = start_server(extra) if set(scenarios) - {"telemetry"} else None
    try:
        if "throughput" in scenarios:
            rows = []
            for clients in args.clients:
                rows.append(
                    await throughput(
                        server,
                        clients,
                        3 if quick else args.duration,
                        1 if quick else 2,
                        args.tokens,
                    )
                )
            sections.append(table(f"Full runs, {args.tokens} tokens each", rows))
            record["throughput"] = rows
        if "ttfe" in scenarios:
            row = await sequential_ttfe(server, 300 if quick else 2000, args.tokens)
            sections.append(table("Time to first event, one client, sequential runs", [row]))
            record["ttfe"] = row
        if "tools" in scenarios:
            row = await tool_runs(server, 200 if quick else 1000)
            sections.append(table("Runs with one backend tool call (kb_search), sequential", [row]))
            record["tool_runs"] = row
        if "held" in scenarios:
            row = await held_streams(server, 200 if quick else args.held)
            sections.append(
                table("Held streams (one run each, paused after its first token)", [row])
            )
            record["held"] = row
        if "index" in scenarios:
            rows = [
                await indexing(server, 100 if quick else 1000, 1000, clients) for clients in (1, 8)
            ]
            sections.append(
                table("Knowledge indexing through the API (ingest, chunk, index)", rows)
            )
            record["index"] = rows
        if "render" in scenarios:
            rows = [
                await render_latency(server, 100 if quick else 1000, formats)
                for formats in (["markdown", "html"], ["markdown", "html", "pdf"])
            ]
            sections.append(table("Render latency, request to done, sequential", rows))
            record["render"] = rows
    finally:
        if server is not None:
            stop_server(server)
    if "telemetry" in scenarios:
        sections.extend(await telemetry_rows(args, extra, quick, record))
    if args.postgres and ("throughput" in scenarios or "ttfe" in scenarios):
        sections.extend(await postgres_rows(args, extra, quick, record))
    if args.redis and ("throughput" in scenarios or "ttfe" in scenarios):
        sections.extend(await redis_rows(args, extra, quick, record))
    if "tools" in scenarios:
        row = await tool_overhead(5_000 if quick else 20_000)
        sections.append(table("Tool invocation overhead in process (policy, schema, audit)", [row]))
        record["tool_overhead"] = row
    backend = ", ".join(f"{k}={v}" for k, v in extra.items()) or "embedded defaults (SQLite)"
    if "postgres" in record:
        backend += "; then Postgres (row-level security on) for the rows marked so"
    if "redis" in record:
        backend += "; then Redis (local, loopback) for the rows marked so"
    header = (
        f"# SBA benchmark\n\n- date: {record['date']}\n- commit: {record['commit']}\n"
        f"- python: {record['python']}\n- backend: {backend}\n"
        f"- server pinned to core 0, load generator to core 1; loopback; keep-alive HTTP/1.1\n\n"
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
        choices=["all", "throughput", "ttfe", "tools", "held", "index", "render", "telemetry"],
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--env", action="append", default=[], help="extra server KEY=VALUE")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "SBA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin DSN for the Postgres rows (a fresh database is made and dropped); '' skips",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("SBA_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        help="Redis URL for the Redis rows (keys under a bench prefix, removed); '' skips",
    )
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
