"""Workers as real processes: a job survives its worker's SIGKILL and its effect happens once;
SIGTERM lets a worker finish the job it holds and exit; a job that always fails ends in the
dead-letter store after its retries, and ``sba dlq retry`` runs it again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from application.content.use_cases import kb_document_id, sync_job
from application.jobs.ports import DeadLetterStore, JobQueue
from application.knowledge.ports import KnowledgeStore
from application.ports import SchemaMigrator
from application.tenancy.use_cases import EnsureDemoTenant
from domain.knowledge.model import IndexState
from entrypoints.ioc.container import make_container
from entrypoints.ioc.jobs import start_jobs
from entrypoints.settings import load_settings
from tests.content.fake_basehub import TOKEN, FakeBaseHub, ThreadedBaseHub
from tests.redis_support import REDIS_URL, require_redis

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake() -> Iterator[FakeBaseHub]:
    with ThreadedBaseHub() as hub:
        hub.put("doc-a", "Refund policy", "Refunds within 30 days.")
        yield hub


def environment(tmp_path: Path, fake: FakeBaseHub, **extra: str) -> dict[str, str]:
    source = {"demo": {"kind": "basehub", "token": TOKEN, "endpoint": fake.url, "max_attempts": 1}}
    return {
        "SBA_DATA_DIR": str(tmp_path),
        "SBA_CONTENT__TENANTS": json.dumps(source),
        "SBA_LOG__LEVEL": "WARNING",
        **extra,
    }


def sba(env: dict[str, str], *args: str, **kw) -> subprocess.Popen[str]:
    full = {**os.environ, **env, "PYTHONPATH": "src"}
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli.main", *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


async def until(predicate, *, timeout_s: float, what: str):
    """Waits for an outcome another process produces, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_job_survives_its_worker_being_killed_and_takes_effect_once(tmp_path, fake):
    require_redis()
    prefix = f"sba-test:{uuid.uuid4().hex[:10]}:"
    queue = f"{prefix}jobs"
    env = environment(
        tmp_path,
        fake,
        SBA_BROKER_URL=REDIS_URL,
        SBA_REDIS__KEY_PREFIX=prefix,
        SBA_WORKER__REDELIVER_AFTER_S="1",
        SBA_WORKER__CONCURRENCY="4",
    )
    settings = load_settings(env)
    container = make_container(settings)
    workers: list[subprocess.Popen[str]] = []
    client = aioredis.from_url(REDIS_URL)
    try:
        await (await container.get(SchemaMigrator)).upgrade()
        issued = await (await container.get(EnsureDemoTenant))()
        assert issued is not None
        tenant = issued.key.tenant_id
        await start_jobs(container)
        fake.hold = asyncio.Event()  # BaseHub stalls: the worker is caught mid-job
        await (await container.get(JobQueue)).enqueue(sync_job(tenant, "demo", "doc-a"))

        first = sba(env, "worker")
        workers.append(first)
        await until(
            lambda: asyncio.to_thread(fake.held.is_set), timeout_s=30, what="the first worker"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        fake.release()  # BaseHub answers again (the killed worker's request is abandoned)

        second = sba(env, "worker")
        workers.append(second)
        store = await container.get(KnowledgeStore)
        doc_id = kb_document_id("basehub", "doc-a")

        async def indexed():
            status = await store.status(tenant, doc_id)
            return status if status and status.state is IndexState.INDEXED else None

        status = await until(indexed, timeout_s=60, what="the redelivered job's effect")
        assert status.generation == 1
        assert status.chunks >= 1
        docs = [d for d in await store.list_documents(tenant) if d.metadata.get("ref") == "doc-a"]
        assert [d.id for d in docs] == [doc_id]
        # Asked for by the killed worker, then once more by the one that finished the job.
        asked = [r for r in fake.requests if (r.get("variables") or {}).get("id") == "doc-a"]
        assert len(asked) == 2

        async def settled():
            pending = await client.xpending(queue, f"{queue}:workers")
            return pending["pending"] == 0

        await until(settled, timeout_s=30, what="every delivery to be acknowledged")
        assert (await store.status(tenant, doc_id)).generation == 1
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(10)
                except subprocess.TimeoutExpired:
                    w.kill()
            print(w.stdout.read() if w.stdout else "")  # shown when the test fails
        await container.close()
        await client.delete(queue)
        await client.aclose()


async def test_sigterm_lets_a_worker_finish_the_job_it_holds_then_exit(tmp_path, fake):
    require_redis()
    prefix = f"sba-test:{uuid.uuid4().hex[:10]}:"
    queue = f"{prefix}jobs"
    env = environment(tmp_path, fake, SBA_BROKER_URL=REDIS_URL, SBA_REDIS__KEY_PREFIX=prefix)
    settings = load_settings(env)
    container = make_container(settings)
    client = aioredis.from_url(REDIS_URL)
    worker = None
    try:
        await (await container.get(SchemaMigrator)).upgrade()
        issued = await (await container.get(EnsureDemoTenant))()
        assert issued is not None
        tenant = issued.key.tenant_id
        await start_jobs(container)
        fake.hold = asyncio.Event()
        await (await container.get(JobQueue)).enqueue(sync_job(tenant, "demo", "doc-a"))
        worker = sba(env, "worker")
        await until(lambda: asyncio.to_thread(fake.held.is_set), timeout_s=30, what="the job")
        worker.send_signal(signal.SIGTERM)
        # The worker must not leave while its job is held; once BaseHub answers it finishes.
        with pytest.raises(subprocess.TimeoutExpired):
            await asyncio.to_thread(worker.wait, 1.5)
        fake.release()
        out, _ = await asyncio.to_thread(worker.communicate, timeout=30)
        assert worker.returncode == 0, out
        # The sync finished: the document is saved and its indexing queued for the next
        # worker (this one took no new job after SIGTERM); the sync was acknowledged.
        store = await container.get(KnowledgeStore)
        status = await store.status(tenant, kb_document_id("basehub", "doc-a"))
        assert status is not None and status.state is IndexState.QUEUED
        pending = await client.xpending(queue, f"{queue}:workers")
        assert pending["pending"] == 0
        [group] = await client.xinfo_groups(queue)
        assert group["lag"] == 1  # the index job, delivered to no one yet
        asked = [r for r in fake.requests if (r.get("variables") or {}).get("id") == "doc-a"]
        assert len(asked) == 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        await container.close()
        await client.delete(queue)
        await client.aclose()


async def test_a_job_that_always_fails_is_dead_lettered_and_sba_dlq_retry_reruns_it(tmp_path, fake):
    env = environment(
        tmp_path,
        fake,
        SBA_WORKER__MAX_ATTEMPTS="3",
        SBA_WORKER__RETRY_BASE_MS="1",
        SBA_WORKER__RETRY_CAP_MS="5",
    )
    settings = load_settings(env)
    container = make_container(settings)
    try:
        await (await container.get(SchemaMigrator)).upgrade()
        issued = await (await container.get(EnsureDemoTenant))()
        assert issued is not None
        tenant = issued.key.tenant_id
        await start_jobs(container)
        fake.statuses = [500] * 3  # every attempt fails
        await (await container.get(JobQueue)).enqueue(sync_job(tenant, "demo", "doc-a"))
        dead = await container.get(DeadLetterStore)
        await until(dead.count, timeout_s=30, what="the job to be dead-lettered")
        [letter] = await dead.list(limit=10)
        assert letter.job.attempt == 3
        assert "BaseHub answered 500" in letter.error
        assert fake.statuses == []

        listed = sba(env, "dlq", "list")
        out, _ = listed.communicate(timeout=60)
        assert listed.returncode == 0, out
        assert letter.id in out and "content.sync" in out and "1 dead letter(s)" in out

        retried = sba(env, "dlq", "retry", letter.id)
        out, _ = retried.communicate(timeout=60)
        assert retried.returncode == 0, out
        assert "queued 1 job(s) again" in out
        assert await dead.count() == 0
        store = await container.get(KnowledgeStore)
        status = await store.status(tenant, kb_document_id("basehub", "doc-a"))
        assert status is not None and status.state is IndexState.INDEXED

        missing = sba(env, "dlq", "drop", "dlq_nope")
        out, _ = missing.communicate(timeout=60)
        assert missing.returncode == 1 and "no dead letter dlq_nope" in out
    finally:
        await container.close()


async def test_each_worker_process_serves_its_own_metrics_and_their_sum_is_the_truth(
    tmp_path, fake
):
    """Per-process metrics (ADR 0031): every worker exposes what it did; a scrape of each,
    summed, counts every job exactly once."""
    require_redis()
    from prometheus_client.parser import text_string_to_metric_families

    from tests.redis_support import free_port

    prefix = f"sba-test:{uuid.uuid4().hex[:10]}:"
    queue = f"{prefix}jobs"
    env = environment(tmp_path, fake, SBA_BROKER_URL=REDIS_URL, SBA_REDIS__KEY_PREFIX=prefix)
    settings = load_settings(env)
    container = make_container(settings)
    client = aioredis.from_url(REDIS_URL)
    ports = [free_port(), free_port()]
    workers: list[subprocess.Popen[str]] = []
    docs = [f"doc-{i}" for i in range(6)]
    for doc in docs:
        fake.put(doc, f"Title {doc}", f"Body of {doc}.")

    async def scrape(port: int) -> dict[tuple[str, str], float] | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/plain; version=0.0.4" in head
        tasks: dict[tuple[str, str], float] = {}
        for fam in text_string_to_metric_families(body.decode()):
            if fam.name == "sba_tasks":
                for s in fam.samples:
                    tasks[(s.labels["kind"], s.labels["outcome"])] = s.value
            if fam.name == "sba_queue_depth":
                tasks[("depth", "")] = fam.samples[0].value
        return tasks

    async def synced() -> list[dict[tuple[str, str], float]] | None:
        seen = [await scrape(p) for p in ports]
        if any(s is None for s in seen):
            return None
        done = sum(s.get(("content.sync", "succeeded"), 0) for s in seen if s is not None)
        indexed = sum(s.get(("kb.index", "succeeded"), 0) for s in seen if s is not None)
        return seen if done == len(docs) and indexed == len(docs) else None  # type: ignore[return-value]

    try:
        await (await container.get(SchemaMigrator)).upgrade()
        issued = await (await container.get(EnsureDemoTenant))()
        assert issued is not None
        await start_jobs(container)
        for port in ports:
            workers.append(sba({**env, "SBA_TELEMETRY__WORKER_METRICS_PORT": str(port)}, "worker"))
        jobs = await container.get(JobQueue)
        for doc in docs:
            await jobs.enqueue(sync_job(issued.key.tenant_id, "demo", doc))
        seen = await until(synced, timeout_s=60, what="both workers' metrics to count every job")

        async def drained() -> bool:
            # Acknowledged once finished: the depth reaches zero right after the last one.
            now = [await scrape(p) for p in ports]
            return all(s is not None and s[("depth", "")] == 0 for s in now)

        await until(drained, timeout_s=10, what="the queue depth to reach zero")
        # No job ran twice: the sum is exact, not at least.
        assert sum(s.get(("content.sync", "succeeded"), 0) for s in seen) == len(docs)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.to_thread(w.wait, 30)
            except subprocess.TimeoutExpired:
                w.kill()
        await container.close()
        await client.delete(queue)
        await client.aclose()
