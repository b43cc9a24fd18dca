"""SBA soak: the production shape on one machine, under steady load, with faults at fixed times.

Two API processes (`sba serve`) behind HAProxy (deploy/compose/haproxy.cfg), two job workers
(`sba worker`), a fresh Postgres database (made, migrated, dropped at the end) and a private
redis-server on a free port (so that it can be killed and started again). Through the balancer:
a steady rate of short runs, held streams of slow runs, knowledge-base documents and renders
(indexed and rendered by the workers). During the load, at fixed offsets: `kill -9` of one API
process mid-stream (its clients resume through the balancer on the other instance), Redis killed
and started again on its port, and `kill -9` of a worker holding jobs; each killed process is
started again a few seconds later. Then every run and job is accounted for.

    python bench/soak.py [--duration 180] [--quick] [--rate 10] [--held 8]
                         [--redis-persistence aof|none] [--keep]

Results: a Markdown report printed and written to bench/results/latest-soak.md (latest-soak-quick
with --quick), and a JSON line appended to bench/results/history.jsonl. Everything listens on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The same helpers as the benchmark's (this folder is on the path when run as a script).
from run import free_port, git_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HAPROXY_CFG = ROOT / "deploy" / "compose" / "haproxy.cfg"
TERMINAL_EVENTS = ("RUN_FINISHED", "RUN_ERROR")
TERMINAL_RUN_STATUSES = ("succeeded", "failed", "cancelled")
# How long a client keeps trying to resume a broken stream, and the pause between tries.
RESUME_FOR_S = 60.0
RESUME_PAUSE_S = 0.5
# A job POST answered with an error or cut off is sent again (same id) this many times.
JOB_POST_ATTEMPTS = 5
# Jobs a worker had not acknowledged go back to the stream after this long (the default is
# 60 s; shorter here so that the killed worker's jobs are redelivered within the soak).
REDELIVER_AFTER_S = 15.0
# Before the worker kill, a burst of large documents keeps both workers busy for a while.
BURST_DOCUMENTS = 16
BURST_WORDS = 50_000

INVOICE = (
    "inline:# Invoice {{ number }}\n\nCustomer: **{{ customer }}**\n\n"
    "| item | qty | price |\n| --- | --- | --- |\n"
    "{% for l in lines %}| {{ l.item }} | {{ l.qty }} | {{ '%.2f' % l.price }} |\n{% endfor %}"
)
WORDS = (
    *("invoice", "customer", "payment", "refund", "policy", "shipping", "order", "warranty"),
    *("account", "contract", "delivery", "schedule", "support", "ticket", "holiday"),
    *("vacation", "salary", "report", "quarter", "budget"),
)


def document_text(n: int, words: int) -> str:
    out, count, section = [f"# Soak document {n}\n"], 0, 0
    while count < words:
        section += 1
        sentence = " ".join(WORDS[(n * 7 + section * 13 + i) % len(WORDS)] for i in range(80))
        out.append(f"\n## Section {section}\n\n{sentence.capitalize()}.\n")
        count += 80
    return "".join(out)


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One process of the topology, its output in a log file of its own."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.log.open("ab") as sink:
            sink.write(f"--- start {self.starts + 1} at {time.strftime('%X')}\n".encode())
            sink.flush()
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.popen is not None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self, grace_s: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""


def sba_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "entrypoints.cli.main", *args]


def sba(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(sba_argv(*args), env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"sba {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    return done.stdout


def http_status(port: int, path: str) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: sba\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).split(b" ", 2)
            return int(head[1]) if len(head) > 1 else None
    except (OSError, ValueError):
        return None


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(what: str, ready: Callable[[], bool], process: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not process.alive:
            raise RuntimeError(f"{process.name} exited at start:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s:\n{process.log_tail()}")
        time.sleep(0.05)  # polling a starting process


class Stack:
    """The topology: Postgres database, private Redis, two API processes, two workers, HAProxy."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database = f"sba_soak_{os.getpid()}_{int(time.time())}"
        self.database_made = False
        self.redis_port = free_port()
        self.api_ports = [free_port(), free_port()]
        self.lb_port = free_port()
        self.metrics_token = "soak-metrics-token-0123456789"
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        base = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "SBA_DATA_DIR": str(work / "data"),
            "SBA_DATABASE_URL": f"{base}/{self.database}",
            "SBA_REDIS_URL": redis_url,
            "SBA_BROKER_URL": redis_url,
            "SBA_LLM__LOADTEST": "true",
            # The soak is about faults, not limits: no tenant or address limit refuses it.
            "SBA_RATE_LIMIT__DEFAULT_PER_MINUTE": "0",
            "SBA_RATE_LIMIT__ADDRESS_PER_MINUTE": "100000000",
            "SBA_WORKER__REDELIVER_AFTER_S": str(REDELIVER_AFTER_S),
            "SBA_RENDER__LINK_SECRET": "soak-link-secret-0123456789abcdef",
            "SBA_TELEMETRY__METRICS_TOKEN": self.metrics_token,
        }
        for key in ("SBA_RUNS__LEASE_S", "SBA_RUNS__SWEEP_S"):
            self.env.pop(key, None)  # the real recovery time: lease 10 s, sweep 2 s
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if args.redis_persistence == "aof"
            else ["--appendonly", "no"]
        )
        self.redis = Process(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(work),
                *persistence,
            ],
            dict(os.environ),
            self.logs / "redis.log",
        )
        self.apis = [
            Process(
                f"api-{i + 1}",
                sba_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
                self.env,
                self.logs / f"api-{i + 1}.log",
            )
            for i, port in enumerate(self.api_ports)
        ]
        self.workers = [
            Process(
                f"worker-{i + 1}", sba_argv("worker"), self.env, self.logs / f"worker-{i + 1}.log"
            )
            for i in range(2)
        ]
        self.lb = Process(
            "haproxy",
            [shutil.which("haproxy") or "haproxy", "-db", "-f", str(HAPROXY_CFG)],
            {
                **os.environ,
                "LB_BIND": f"127.0.0.1:{self.lb_port}",
                "LB_API_1": f"127.0.0.1:{self.api_ports[0]}",
                "LB_API_2": f"127.0.0.1:{self.api_ports[1]}",
            },
            self.logs / "haproxy.log",
        )
        self.key = ""

    # Each step is synchronous (process starts and waits); the soak calls them in a thread.

    def start_redis(self) -> None:
        self.redis.start()
        wait_until("redis", lambda: redis_ping(self.redis_port), self.redis, 10)

    def start_api(self, i: int) -> None:
        api, port = self.apis[i], self.api_ports[i]
        api.start()
        wait_until(api.name, lambda: http_status(port, "/readyz") == 200, api, 60)

    def start_worker(self, i: int) -> None:
        """Starts a worker and returns once it reads the job stream: one more connection is
        in XREADGROUP. (A consumer shows in the group only once it has been given a job.)"""
        worker = self.workers[i]
        before = self.readers()
        worker.start()
        wait_until(worker.name, lambda: self.readers() > before, worker, 60)

    def readers(self) -> int:
        try:
            clients = self.redis_command("CLIENT", "LIST")
        except Exception:
            return 0
        if isinstance(clients, bytes):
            clients = clients.decode()
        return sum("cmd=xreadgroup" in line for line in str(clients).splitlines())

    def up(self) -> None:
        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.args.postgres, timeout=5)
            try:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        asyncio.run(create())
        self.database_made = True
        self.start_redis()  # every sba command connects to the job queue
        sba(self.env, "db", "upgrade")
        self.start_api(0)  # the first start seeds the demo tenant; then the second
        self.start_api(1)
        self.key = sba(self.env, "apikey", "create", "--tenant", "demo", "--role", "admin")
        self.key = self.key.strip().splitlines()[-1]
        for i in range(2):
            self.start_worker(i)
        self.lb.start()
        wait_until("haproxy", lambda: http_status(self.lb_port, "/lb-healthz") == 200, self.lb, 20)
        # Both instances pass two health checks (2 s apart) before load starts.
        time.sleep(4.5)

    def down(self) -> None:
        for p in [self.lb, *self.apis, *self.workers]:
            p.stop()
        self.redis.kill9()
        if self.database_made:
            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect(self.args.postgres, timeout=5)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                finally:
                    await conn.close()

            asyncio.run(drop())

    def redis_command(self, *parts: str) -> Any:
        import redis

        client = redis.Redis(port=self.redis_port, socket_timeout=2, decode_responses=True)
        try:
            return client.execute_command(*parts)
        finally:
            client.close()

    def consumers(self) -> list[dict[str, Any]]:
        """The job group's consumers (name, pending, idle ms); empty when Redis cannot say."""
        stream = "sba:jobs"
        try:
            rows = self.redis_command("XINFO", "CONSUMERS", stream, f"{stream}:workers")
        except Exception:
            return []
        out = []
        for row in rows:
            item = dict(zip(row[::2], row[1::2], strict=False)) if isinstance(row, list) else row
            out.append(item)
        return out

    def active_streams(self, i: int) -> int:
        """Streams open on an API instance, from its /metrics."""
        try:
            with socket.create_connection(("127.0.0.1", self.api_ports[i]), timeout=1) as s:
                s.sendall(
                    b"GET /metrics HTTP/1.1\r\nHost: sba\r\nConnection: close\r\n"
                    b"Authorization: Bearer " + self.metrics_token.encode() + b"\r\n\r\n"
                )
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return -1
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("sba_active_streams"):
                return int(float(line.split()[-1]))
        return -1


# --------------------------------------------------------------------------- load


@dataclass
class RunRecord:
    run_id: str
    kind: str  # short | held
    started_at: float
    status: int | None = None  # the POST's HTTP status; None when no answer came
    ended_at: float | None = None
    outcome: str = ""  # RUN_FINISHED, RUN_ERROR, or '' while open
    code: str = ""
    last_id: int = 0
    ids: list[int] = field(default_factory=list)
    broken_at: list[float] = field(default_factory=list)
    resumes: int = 0
    server_status: str = ""  # from GET /v1/runs/{id} after the soak, for runs not ended
    server_ended_at: float | None = None  # when the server recorded its end (broken runs)


@dataclass
class JobRecord:
    kind: str  # document | render
    job_id: str
    submitted_at: float
    attempts: int = 0
    accepted: bool = False
    done_at: float | None = None
    state: str = ""
    generation: int = 0
    render_attempts: int = 0
    finished_events: int = 0


@dataclass
class Fault:
    name: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)
    back_at: float | None = None


class Soak:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        import httpx

        self.stack = stack
        self.args = args
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.runs: list[RunRecord] = []
        self.jobs: list[JobRecord] = []
        self.errors: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.stopping = asyncio.Event()
        self.jobs_done = asyncio.Event()
        self.load_stopped = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.saturated = 0
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.lb_port}",
            headers={"Authorization": f"Bearer {stack.key}"},
            timeout=httpx.Timeout(10.0, read=40.0),
            limits=httpx.Limits(max_connections=400, max_keepalive_connections=100),
        )
        self.counter = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def error(self, what: str) -> None:
        self.errors[what] += 1

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ----- runs

    def run_body(self, run_id: str, tokens: int, delay_ms: int) -> dict[str, Any]:
        return {
            "threadId": f"th-{run_id}",
            "runId": run_id,
            "messages": [{"id": f"m-{run_id}", "role": "user", "content": "hi"}],
            "state": {},
            "tools": [],
            "context": [],
            "forwardedProps": {"bench": {"tokens": tokens, "delay_ms": delay_ms}},
        }

    async def read_stream(self, rec: RunRecord, request: Any, what: str) -> str:
        """Reads one SSE answer: 'ended' (a terminal event), 'refused' (an error status),
        'gone' (404), or 'broken' (cut off before the terminal event)."""
        import httpx

        try:
            async with self.http.stream(**request) as response:
                if what == "POST runs":
                    rec.status = response.status_code
                if response.status_code != 200:
                    body = await response.aread()
                    code = ""
                    with contextlib.suppress(ValueError, AttributeError):
                        code = json.loads(body).get("code", "")
                    self.error(f"{what}: {response.status_code} {code}".strip())
                    return "gone" if response.status_code == 404 else "refused"
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        with contextlib.suppress(ValueError):
                            event_id = int(line[3:].strip())
                            rec.ids.append(event_id)
                            rec.last_id = event_id
                    elif line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("type") in TERMINAL_EVENTS:
                            rec.outcome = event["type"]
                            rec.code = event.get("code") or ""
                            rec.ended_at = self.now()
                            if rec.outcome == "RUN_ERROR":
                                self.error(f"RUN_ERROR {rec.code}")
                            return "ended"
        except httpx.TransportError as exc:
            self.error(f"{what}: transport ({type(exc).__name__})")
            return "broken"
        self.error(f"{what}: stream ended before the run did")
        return "broken"

    async def run(self, kind: str, tokens: int, delay_ms: int) -> None:
        self.counter += 1
        rec = RunRecord(f"soak-{kind}-{self.counter}", kind, self.now())
        self.runs.append(rec)
        request = {
            "method": "POST",
            "url": "/v1/agents/assistant/runs",
            "json": self.run_body(rec.run_id, tokens, delay_ms),
            "headers": {"Accept": "text/event-stream"},
        }
        result = await self.read_stream(rec, request, "POST runs")
        if result in ("ended", "refused"):
            return
        # Cut off (or never answered): resume through the balancer after the last event seen.
        deadline = time.monotonic() + RESUME_FOR_S
        while result in ("broken", "refused") and time.monotonic() < deadline:
            rec.broken_at.append(self.now())
            await asyncio.sleep(RESUME_PAUSE_S)
            rec.resumes += 1
            headers = {"Accept": "text/event-stream"}
            if rec.last_id:
                headers["Last-Event-ID"] = str(rec.last_id)
            result = await self.read_stream(
                rec,
                {"method": "GET", "url": f"/v1/runs/{rec.run_id}/events", "headers": headers},
                "GET events (resume)",
            )
            if result == "gone" and rec.status is None:
                return  # the POST never reached an instance: the run was not started

    async def short_runs(self, stop_at: float) -> None:
        interval = 1.0 / self.args.rate
        next_at = self.now()
        while self.now() < stop_at:
            if len(self.tasks) < 300:
                self.spawn(self.run("short", 20, 5))
            else:
                self.saturated += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - self.now()))

    async def held_runs(self, stop_at: float) -> None:
        async def holder() -> None:
            while self.now() < stop_at:
                await self.run("held", 60, 500)

        await asyncio.gather(*(holder() for _ in range(self.args.held)))

    # ----- jobs

    async def submit(self, job: JobRecord, path: str, body: dict[str, Any]) -> None:
        import httpx

        self.jobs.append(job)
        while job.attempts < JOB_POST_ATTEMPTS and not job.accepted:
            job.attempts += 1
            try:
                response = await self.http.post(path, json=body)
            except httpx.TransportError as exc:
                self.error(f"POST {path}: transport ({type(exc).__name__})")
            else:
                if response.status_code in (200, 201, 202):
                    job.accepted = True
                    break
                code = ""
                with contextlib.suppress(ValueError, AttributeError):
                    code = response.json().get("code", "")
                self.error(f"POST {path}: {response.status_code} {code}".strip())
            await asyncio.sleep(1.0)

    async def document(self, words: int) -> None:
        self.counter += 1
        job = JobRecord("document", f"soak-doc-{self.counter}", self.now())
        body = {
            "id": job.job_id,
            "title": job.job_id,
            "content": document_text(self.counter, words),
        }
        await self.submit(job, "/v1/kb/documents", body)

    async def render(self) -> None:
        self.counter += 1
        job = JobRecord("render", f"soak-rnd-{self.counter}", self.now())
        data = {
            "number": self.counter,
            "customer": "Toko Maju",
            "lines": [
                {"item": f"Item {i}", "qty": i % 5 + 1, "price": 10.5 * i} for i in range(20)
            ],
        }
        body = {"id": job.job_id, "template": INVOICE, "data": data}
        await self.submit(job, "/v1/renders", body)

    async def job_load(self, stop_at: float) -> None:
        tick = 0
        while self.now() < stop_at:
            tick += 1
            self.spawn(self.document(400))
            if tick % 2 == 0:
                self.spawn(self.render())
            await asyncio.sleep(1.0)

    async def job_state(self, job: JobRecord) -> None:
        """Reads a job's state from the API (no error counted: the watcher retries)."""
        import httpx

        path = (
            f"/v1/kb/documents/{job.job_id}"
            if job.kind == "document"
            else f"/v1/renders/{job.job_id}"
        )
        try:
            response = await self.http.get(path)
        except httpx.TransportError:
            return
        if response.status_code != 200:
            return
        out = response.json()
        if job.kind == "document":
            index = out.get("index") or {}
            job.state = index.get("state", "")
            job.generation = int(index.get("generation", 0))
            done = job.state in ("indexed", "failed")
        else:
            job.state = out.get("state", "")
            job.render_attempts = int(out.get("attempts", 0))
            done = job.state in ("done", "failed")
        if done and job.done_at is None:
            job.done_at = self.now()

    async def watch_jobs(self) -> None:
        """Follows every job until it is done, once a second, until the soak stops."""
        while not self.stopping.is_set():
            open_jobs = [j for j in self.jobs if j.accepted and j.done_at is None]
            if self.load_stopped and not open_jobs:
                self.jobs_done.set()
            for i in range(0, len(open_jobs), 20):
                await asyncio.gather(*(self.job_state(j) for j in open_jobs[i : i + 20]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)

    # ----- faults

    async def kill_api(self, restart_after: float) -> None:
        streams = await asyncio.gather(
            *(asyncio.to_thread(self.stack.active_streams, i) for i in range(2))
        )
        i = 0 if streams[0] >= streams[1] else 1
        fault = Fault(f"kill -9 {self.stack.apis[i].name}", self.now())
        fault.detail["streams_open_on_it"] = streams[i]
        self.faults.append(fault)
        print(f"[{fault.at:6.1f} s] {fault.name}", flush=True)
        await asyncio.to_thread(self.stack.apis[i].kill9)
        await asyncio.sleep(restart_after)
        await asyncio.to_thread(self.stack.start_api, i)
        fault.back_at = self.now()

    async def restart_redis(self, down_for: float) -> None:
        fault = Fault("restart Redis", self.now())
        fault.detail["persistence"] = self.args.redis_persistence
        self.faults.append(fault)
        print(f"[{fault.at:6.1f} s] {fault.name}", flush=True)
        await asyncio.to_thread(self.stack.redis.kill9)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.stack.start_redis)
        fault.back_at = self.now()

    async def kill_worker(self, restart_after: float) -> None:
        # A burst of larger documents so that both workers hold jobs; the kill waits (a few
        # seconds at most) until each worker has deliveries it has not acknowledged.
        for _ in range(BURST_DOCUMENTS):
            self.spawn(self.document(BURST_WORDS))
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 8
        busy: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            busy = [c for c in await asyncio.to_thread(self.stack.consumers) if c["pending"]]
            if len(busy) >= 2:
                break
            await asyncio.sleep(0.02)
        worker = self.stack.workers[0]
        fault = Fault(f"kill -9 {worker.name}", self.now())
        fault.detail["workers_holding_jobs_at_kill"] = len(busy)
        self.faults.append(fault)
        print(f"[{fault.at:6.1f} s] {fault.name}", flush=True)
        await asyncio.to_thread(worker.kill9)
        await asyncio.sleep(restart_after)
        await asyncio.to_thread(self.stack.start_worker, 0)
        fault.back_at = self.now()
        # Before they are redelivered, the deliveries still unacknowledged are the killed
        # worker's (the other worker finishes its own within a few seconds).
        await asyncio.sleep(max(0.0, REDELIVER_AFTER_S - 4.0 - (self.now() - fault.at)))
        held = [int(c["pending"]) for c in await asyncio.to_thread(self.stack.consumers)]
        fault.detail["jobs_held_by_killed_worker"] = max(held, default=0)

    # ----- the whole soak

    async def main(self) -> None:
        d = self.args.duration
        stop_at = d
        watcher = asyncio.ensure_future(self.watch_jobs())
        load = [
            asyncio.ensure_future(self.short_runs(stop_at)),
            asyncio.ensure_future(self.held_runs(stop_at)),
            asyncio.ensure_future(self.job_load(stop_at)),
        ]
        schedule: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (0.15 * d, lambda: self.kill_api(5.0)),
            (0.45 * d, lambda: self.restart_redis(3.0)),
            (0.7 * d - 1.5, lambda: self.kill_worker(5.0)),
        ]

        async def at(offset: float, fault: Callable[[], Awaitable[None]]) -> None:
            await asyncio.sleep(max(0.0, offset - self.now()))
            await fault()

        await asyncio.gather(*load, *(at(offset, fault) for offset, fault in schedule))
        print(f"[{self.now():6.1f} s] load stopped; draining", flush=True)
        # Drain: open streams end (held runs last 30 s), jobs finish (redelivery included).
        drain_until = time.monotonic() + RESUME_FOR_S + 10
        while self.tasks and time.monotonic() < drain_until:
            await asyncio.wait(set(self.tasks), timeout=1.0)
        self.load_stopped = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.jobs_done.wait(), REDELIVER_AFTER_S * 2 + 15)
        self.stopping.set()
        await watcher
        for task in list(self.tasks):
            task.cancel()
        await self.settle()

    async def settle(self) -> None:
        """After the load: every run not seen to end is looked up; every job's final state
        is read, and renders' completions are counted in the audit trail."""
        import httpx

        for rec in self.runs:
            if rec.outcome and not rec.broken_at:
                continue
            try:
                response = await self.http.get(f"/v1/runs/{rec.run_id}")
            except httpx.TransportError:
                rec.server_status = "unreachable"
                continue
            if response.status_code == 404:
                rec.server_status = "absent"
            elif response.status_code == 200:
                out = response.json()
                rec.server_status = out.get("status", "")
                rec.code = rec.code or out.get("errorCode") or ""
                if out.get("finishedAtMs"):
                    rec.server_ended_at = out["finishedAtMs"] / 1000 - self.t0_wall
            else:
                rec.server_status = f"http {response.status_code}"
        for i in range(0, len(self.jobs), 20):
            await asyncio.gather(*(self.job_state(j) for j in self.jobs[i : i + 20]))
        trail = await asyncio.to_thread(sba, self.stack.env, "audit", "export", "--tenant", "demo")
        finished: Counter[str] = Counter()
        for line in trail.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("action") == "render.finished":
                    finished[entry.get("subject", "")] += 1
        for job in self.jobs:
            if job.kind == "render":
                job.finished_events = finished[job.job_id]
        self.warnings = log_warnings([*self.stack.apis, *self.stack.workers])
        letters = await asyncio.to_thread(sba, self.stack.env, "dlq", "list")
        self.dead_letters = int(letters.strip().splitlines()[-1].split()[0])
        await self.http.aclose()


# --------------------------------------------------------------------------- report


def log_warnings(processes: list[Process], top: int = 8) -> list[dict[str, Any]]:
    """The most frequent WARNING and ERROR lines of the SBA processes' JSON logs."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for process in processes:
        try:
            lines = process.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"level":"WARNING"' not in line and '"level":"ERROR"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = re.sub(r"\d+", "N", str(entry.get("message", "")))[:110]
            counts[(process.name.split("-")[0], entry.get("level", ""), message)] += 1
    rows = []
    for kind in ("api", "worker"):
        mine = Counter({k: n for k, n in counts.items() if k[0] == kind})
        rows += [
            {"processes": who, "level": level, "message": message.replace("|", "/"), "lines": n}
            for (who, level, message), n in mine.most_common(top)
        ]
    return rows


def summarize(soak: Soak) -> dict[str, Any]:
    runs = soak.runs
    known = ("pending", "running", *TERMINAL_RUN_STATUSES)
    started = [r for r in runs if r.status == 200 or r.ids or r.server_status in known]
    not_started = [r for r in runs if r not in started]
    finished = [r for r in started if r.outcome == "RUN_FINISHED"]
    lost_instance = [r for r in started if r.code == "instance_lost"]
    other_error = [r for r in started if r.outcome == "RUN_ERROR" and r.code != "instance_lost"]
    ended_after = [r for r in started if not r.outcome and r.server_status in TERMINAL_RUN_STATUSES]
    lost = [r for r in started if not r.outcome and r.server_status not in TERMINAL_RUN_STATUSES]
    repeated = [r for r in started if r.ids != sorted(set(r.ids))]
    # A finished run's client saw every event, 1 to the last; a lost run may have a gap (the
    # events its instance had not yet written behind, ADR 0038).
    gaps = [r for r in finished if sorted(set(r.ids)) != list(range(1, max(r.ids, default=0) + 1))]
    resumed = [r for r in started if r.resumes]
    run_summary = {
        "attempted": len(runs),
        "started": len(started),
        "short": sum(r.kind == "short" for r in started),
        "held": sum(r.kind == "held" for r in started),
        "finished": len(finished),
        "instance_lost": len(lost_instance),
        "other_run_errors": len(other_error),
        "ended_seen_after": len(ended_after),
        "lost": len(lost),
        "never_started": len(not_started),
        "resumed": len(resumed),
        "resumed_to_the_end": sum(bool(r.outcome) for r in resumed),
        "events_repeated_or_reordered": len(repeated),
        "finished_with_events_missing": len(gaps),
    }

    job_rows = []
    for kind in ("document", "render"):
        jobs = [j for j in soak.jobs if j.kind == kind]
        accepted = [j for j in jobs if j.accepted]
        ok_state = "indexed" if kind == "document" else "done"
        completed = [j for j in accepted if j.state == ok_state]
        if kind == "document":
            duplicated = [j for j in completed if j.generation > 1]
        else:
            duplicated = [j for j in completed if j.finished_events > 1]
        job_rows.append(
            {
                "kind": kind,
                "submitted": len(accepted),
                "completed": len(completed),
                "failed": sum(j.state == "failed" for j in accepted),
                "lost": sum(j.state not in (ok_state, "failed") for j in accepted),
                "duplicated": len(duplicated),
                "retried_posts": sum(j.attempts > 1 for j in accepted),
                "refused": len(jobs) - len(accepted),
                "refused_but_stored": sum(bool(j.state) for j in jobs if not j.accepted),
                "started_twice": (
                    sum(j.render_attempts > 1 for j in accepted) if kind == "render" else None
                ),
            }
        )

    fault_rows = []
    orphan_detail: list[dict[str, Any]] = []
    for fault in sorted(soak.faults, key=lambda f: f.at):
        row: dict[str, Any] = {"at_s": round(fault.at, 1), "fault": fault.name}
        row["back_after_s"] = round(fault.back_at - fault.at, 1) if fault.back_at else None
        first_ok = [
            r.ended_at for r in finished if r.started_at >= fault.at and r.ended_at is not None
        ]
        row["first_ok_run_s"] = round(min(first_ok) - fault.at, 2) if first_ok else None
        if fault.back_at is not None:
            after_back = [
                r.ended_at
                for r in finished
                if r.started_at >= fault.back_at and r.ended_at is not None
            ]
            row["first_ok_run_after_back_s"] = (
                round(min(after_back) - fault.at, 2) if after_back else None
            )
        if fault.name.startswith("kill -9 api"):
            orphans = [
                r for r in started if r.broken_at and fault.at <= r.broken_at[0] <= fault.at + 5
            ]
            ends = [r.ended_at for r in orphans if r.ended_at is not None]
            row["streams_broken"] = len(orphans)
            row["orphans_instance_lost"] = sum(r.code == "instance_lost" for r in orphans)
            row["orphans_finished"] = sum(r.outcome == "RUN_FINISHED" for r in orphans)
            row["orphans_not_ended"] = len(orphans) - len(ends)
            row["last_orphan_ended_s"] = round(max(ends) - fault.at, 2) if ends else None
            recorded = [r.server_ended_at for r in orphans if r.server_ended_at is not None]
            row["last_orphan_recorded_s"] = round(max(recorded) - fault.at, 2) if recorded else None
            orphan_detail = [
                {
                    "run_id": r.run_id,
                    "outcome": r.outcome,
                    "code": r.code,
                    "broken_s": round(r.broken_at[0] - fault.at, 2),
                    "ended_s": round(r.ended_at - fault.at, 2) if r.ended_at else None,
                    "recorded_s": (
                        round(r.server_ended_at - fault.at, 2) if r.server_ended_at else None
                    ),
                    "resumes": r.resumes,
                }
                for r in orphans
            ]
        if fault.name.startswith("kill -9 worker"):
            before = [j for j in soak.jobs if j.accepted and j.submitted_at <= fault.at]
            dones = [j.done_at for j in before]
            row["jobs_submitted_before"] = len(before)
            row["all_done_s"] = (
                round(max(dones) - fault.at, 2)  # type: ignore[type-var]
                if dones and None not in dones
                else None
            )
        during = [r for r in started if fault.at <= r.started_at <= (fault.back_at or fault.at) + 1]
        row["runs_started_in_window"] = len(during)
        row["detail"] = ", ".join(f"{k}={v}" for k, v in fault.detail.items())
        fault_rows.append(row)
    return {
        "runs": run_summary,
        "jobs": job_rows,
        "dead_letters": soak.dead_letters,
        "errors": dict(soak.errors.most_common()),
        "faults": fault_rows,
        "orphans": orphan_detail,
        "generator_saturated": soak.saturated,
        "lost_run_ids": [r.run_id for r in lost][:20],
        "refused_jobs": [
            f"{j.job_id} ({j.state or 'absent'})" for j in soak.jobs if not j.accepted
        ][:20],
        "server_warnings": soak.warnings,
        "lost_job_ids": [
            j.job_id
            for j in soak.jobs
            if j.accepted and j.state not in ("indexed", "done", "failed")
        ][:20],
    }


def table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"### {title}\n\n(none)\n"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append(
            "| " + " | ".join("-" if row.get(k) is None else str(row.get(k)) for k in keys) + " |"
        )
    return "\n".join(lines) + "\n"


def report(record: dict[str, Any], args: argparse.Namespace) -> str:
    s = record["soak"]
    header = (
        f"# SBA soak\n\n- date: {record['date']}\n- commit: {record['commit']}\n"
        f"- python: {record['python']}; {os.cpu_count()} cores; loopback only\n"
        f"- duration: {args.duration:.0f} s of load, then the drain; faults at 15 %, 45 % and "
        f"70 % of it\n"
        f"- topology: HAProxy (deploy/compose/haproxy.cfg) → two `sba serve`; two `sba worker`; "
        f"a fresh Postgres database (row-level security, dropped at the end); a private "
        f"redis-server (persistence: {args.redis_persistence}"
        + (", appendfsync always" if args.redis_persistence == "aof" else ", nothing on disk")
        + ")\n"
        f"- load through HAProxy: {args.rate} short runs/s (20 tokens, 5 ms apart), "
        f"{args.held} held streams (60 tokens, 500 ms apart, about 30 s each), a document "
        f"(about 400 words) each second and a render (Markdown + HTML) every 2 s; before the "
        f"worker kill, a burst of {BURST_DOCUMENTS} documents of about {BURST_WORDS:,} words\n"
        f"- recovery settings at their defaults (run lease 10 s, sweep 2 s) except "
        f"SBA_WORKER__REDELIVER_AFTER_S={REDELIVER_AFTER_S:.0f} (default 60)\n\n"
    )
    runs = s["runs"]
    run_rows = [{k: runs[k] for k in runs}]
    errors = [{"error": k, "count": v} for k, v in s["errors"].items()]
    body = "\n".join(
        [
            table("Runs", run_rows),
            table("Jobs", s["jobs"]),
            f"Dead letters after the soak: {s['dead_letters']}\n",
            table("Faults and recovery (seconds after the fault)", s["faults"]),
            table("Runs cut off by the API kill (seconds after it)", s["orphans"]),
            table("Client-visible errors", errors),
            table("Server warnings and errors (log lines, digits as N)", s["server_warnings"]),
        ]
    )
    notes = []
    if s["lost_run_ids"]:
        notes.append("Lost runs: " + ", ".join(s["lost_run_ids"]))
    if s["lost_job_ids"]:
        notes.append("Lost jobs: " + ", ".join(s["lost_job_ids"]))
    if s["refused_jobs"]:
        notes.append(
            "Jobs refused on every attempt, with their state on the server after the soak: "
            + ", ".join(s["refused_jobs"])
        )
    if s["generator_saturated"]:
        notes.append(f"Short runs not sent (300 requests already open): {s['generator_saturated']}")
    return header + body + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")


# --------------------------------------------------------------------------- main


def preflight(args: argparse.Namespace) -> None:
    for tool in ("redis-server", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"soak: {tool} is not installed")
    if not HAPROXY_CFG.exists():
        raise SystemExit(f"soak: {HAPROXY_CFG} is missing")
    if args.duration < 45:
        raise SystemExit("soak: --duration is at least 45 s (three faults and their recovery)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds of load (180)")
    parser.add_argument("--quick", action="store_true", help="60 s of load")
    parser.add_argument("--rate", type=float, default=10.0, help="short runs started per second")
    parser.add_argument("--held", type=int, default=8, help="held streams kept open")
    parser.add_argument(
        "--redis-persistence",
        choices=["aof", "none"],
        default="aof",
        help="aof: Redis restarts with what it had (appendfsync always); none: it restarts empty",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "SBA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin DSN: a fresh database is made there and dropped",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 60.0 if args.quick else 180.0
    preflight(args)
    work = Path(tempfile.mkdtemp(prefix="sba-soak-"))
    stack = Stack(args, work)
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "python": platform.python_version(),
    }
    ok = False
    try:
        print(f"soak: starting the topology (logs in {stack.logs})", flush=True)
        stack.up()
        soak = Soak(stack, args)
        print(f"soak: load through http://127.0.0.1:{stack.lb_port} for {args.duration:.0f} s")
        asyncio.run(soak.main())
        record["soak"] = summarize(soak) | {
            "duration_s": args.duration,
            "rate": args.rate,
            "held": args.held,
            "redis_persistence": args.redis_persistence,
            "quick": args.quick,
        }
        ok = True
    finally:
        stack.down()
        if args.keep or not ok:
            print(f"soak: logs kept in {stack.logs}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report(record, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("latest-soak-quick.md" if args.quick else "latest-soak.md")).write_text(text)
    with (RESULTS / "history.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
