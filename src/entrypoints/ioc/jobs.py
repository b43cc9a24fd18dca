"""Providers of background work, content, and the render pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

import httpx
from dishka import AsyncContainer, Provider, Scope, from_context, provide
from dishka.integrations.taskiq import FromDishka, inject
from dishka.integrations.taskiq import setup_dishka as setup_taskiq_dishka
from opentelemetry.trace import SpanKind
from taskiq import AsyncBroker

from adapters.billing.stripe import StripeMeterReporter
from adapters.blob.local import LocalBlobStore
from adapters.blob.s3 import S3BlobStore
from adapters.blob.sigv4 import Credentials
from adapters.content.basehub import BaseHubContentSource
from adapters.content.folder import FolderContentSource
from adapters.jobs.codec import decode_job
from adapters.jobs.taskiq import (
    TASK_NAME,
    TaskiqJobQueue,
    attach_trace,
    create_broker,
    detach_trace,
    is_in_process,
    run_worker,
)
from adapters.llm.http import HttpRetryPolicy
from adapters.observability.exposition import serve_metrics
from adapters.observability.telemetry import Telemetry
from adapters.outbound import guarded_client
from adapters.render.convert import MarkdownConverter
from adapters.render.jinja import SandboxedTemplateEngine
from adapters.sqla.jobs import SqlaDeadLetterStore, SqlaRenderJobRepository
from adapters.sqla.scope import Database
from application.billing.use_cases import METER_JOB, BillingCustomers, ReportRunUsage
from application.content.ports import ContentSource, ContentSources, ReplayGuard
from application.content.use_cases import (
    SYNC_JOB,
    HandleContentWebhook,
    ReadContent,
    ReadDocument,
    SyncContent,
)
from application.jobs.ports import DeadLetterStore, JobHandler, JobQueue
from application.jobs.use_cases import ManageDeadLetters, RunJob
from application.knowledge.ports import ChunkVectors, Embedder, KnowledgeStore
from application.knowledge.use_cases import INDEX_JOB, IndexDocument, IngestDocument
from application.ports import Cache, Clock, UnitOfWork
from application.render.ports import (
    BlobStore,
    DocumentConverter,
    RenderJobRepository,
    TemplateEngine,
)
from application.render.use_cases import (
    RENDER_JOB,
    DownloadArtifact,
    ExecuteRender,
    GetRender,
    LinkSigner,
    RequestRender,
)
from domain.jobs.model import RetryPolicy
from entrypoints.ioc.secrets import read_secret
from entrypoints.ioc.telemetry import counted
from entrypoints.settings import ContentSourceSettings, Settings, SettingsError

ContentClient = NewType("ContentClient", httpx.AsyncClient)

log = logging.getLogger("sba.jobs")


@dataclass(frozen=True, slots=True)
class Metering:
    """Tenants whose usage is reported to the billing provider, and the job that reports it
    (None: metering is off, the local ledger is all)."""

    customers: BillingCustomers
    report: ReportRunUsage | None


@dataclass(frozen=True, slots=True)
class Embeddings:
    """The embeddings provider, or None when ``SBA_KB__EMBEDDINGS__MODEL`` is unset (search is
    lexical only)."""

    embedder: Embedder | None


@dataclass(frozen=True, slots=True)
class StaticContentSources:
    sources: Mapping[str, ContentSource]
    secrets: Mapping[str, bytes]

    def for_tenant(self, tenant_slug: str) -> ContentSource | None:
        return self.sources.get(tenant_slug)

    def webhook_secret(self, tenant_slug: str) -> bytes | None:
        return self.secrets.get(tenant_slug)


def _artifacts_dir(data_dir: str) -> str:
    return str(Path(data_dir).expanduser() / "artifacts")


def _source(slug: str, cfg: ContentSourceSettings, client: httpx.AsyncClient) -> ContentSource:
    where = f"SBA_CONTENT__TENANTS ({slug})"
    if cfg.kind == "folder":
        if not cfg.path:
            raise SettingsError(f"{where}: a folder source needs a path")
        return FolderContentSource(cfg.path)
    token = read_secret(cfg.token, cfg.token_file, f"{where}: token_file")
    if not token:
        raise SettingsError(f"{where}: a BaseHub source needs a token or token_file")
    try:
        return BaseHubContentSource(
            client,
            token=token,
            collection=cfg.collection,
            body_field=cfg.body_field,
            endpoint=cfg.endpoint,
            ref=cfg.ref,
            draft=cfg.draft,
            retry=HttpRetryPolicy(max_attempts=cfg.max_attempts),
        )
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from exc


async def run_job_task(
    payload: str, runner: FromDishka[RunJob], telemetry: FromDishka[Telemetry]
) -> None:
    """The one taskiq task: every job travels as an envelope and ``RunJob`` dispatches it,
    inside the trace of whoever queued it."""
    job = decode_job(payload)
    token = attach_trace(job)
    try:
        tracer = telemetry.tracer
        if tracer is None:
            await runner(job)
            return
        with tracer.start_as_current_span(
            f"job {job.kind}",
            kind=SpanKind.CONSUMER,
            attributes={
                "sba.job.kind": job.kind,
                "sba.job.attempt": job.attempt,
                "sba.tenant": job.tenant_id,
            },
        ):
            await runner(job)
    finally:
        detach_trace(token)


class JobProvider(Provider):
    scope = Scope.APP
    settings = from_context(Settings, scope=Scope.APP)

    @provide
    async def broker(self, settings: Settings) -> AsyncIterator[AsyncBroker]:
        w = settings.worker
        broker = create_broker(
            settings.broker_url,
            queue_name=settings.job_stream,
            redeliver_after_s=w.redeliver_after_s,
            max_async_tasks=w.concurrency,
        )
        broker.register_task(inject(run_job_task, patch_module=True), task_name=TASK_NAME)
        yield broker
        await broker.shutdown()

    @provide
    async def job_queue(self, broker: AsyncBroker, telemetry: Telemetry) -> AsyncIterator[JobQueue]:
        queue = TaskiqJobQueue(broker)
        if telemetry.metrics is not None:
            telemetry.metrics.probe("queue_depth", queue.depth)
        yield queue
        queue.close()

    @provide
    def dead_letters(self, db: Database, telemetry: Telemetry) -> DeadLetterStore:
        store = SqlaDeadLetterStore(db)
        if telemetry.metrics is not None:
            telemetry.metrics.probe("dead_letters", store.count)
        return store

    @provide
    def retry_policy(self, settings: Settings) -> RetryPolicy:
        w = settings.worker
        try:
            return RetryPolicy(
                max_attempts=w.max_attempts, base_ms=w.retry_base_ms, cap_ms=w.retry_cap_ms
            )
        except ValueError as exc:
            raise SettingsError(f"SBA_WORKER: {exc}") from exc

    @provide
    def run_job(
        self,
        queue: JobQueue,
        dead: DeadLetterStore,
        clock: Clock,
        policy: RetryPolicy,
        index: IndexDocument,
        sync: SyncContent,
        render: ExecuteRender,
        metering: Metering,
        telemetry: Telemetry,
    ) -> RunJob:
        handlers: dict[str, JobHandler] = {INDEX_JOB: index, SYNC_JOB: sync, RENDER_JOB: render}
        if metering.report is not None:
            handlers[METER_JOB] = metering.report
        runner = RunJob(handlers, queue, dead, clock, policy)
        if telemetry.metrics is not None:
            telemetry.metrics.watch_jobs(runner.stats)
        return runner

    @provide
    async def metering(
        self, settings: Settings, uow: UnitOfWork, clock: Clock
    ) -> AsyncIterator[Metering]:
        b = settings.billing
        customers = BillingCustomers(uow, b.customers if b.provider != "none" else {}, clock)
        if b.provider == "none":
            yield Metering(customers, None)
            return
        key = read_secret(b.api_key, b.api_key_file, "SBA_BILLING__API_KEY_FILE")
        if not key or not b.customers:
            raise SettingsError(
                "SBA_BILLING__PROVIDER=stripe needs SBA_BILLING__API_KEY (or …_FILE) and "
                "SBA_BILLING__CUSTOMERS ({tenant slug: Stripe customer id})"
            )
        try:
            client = guarded_client([b.base_url], timeout=httpx.Timeout(10.0, connect=5.0))
        except ValueError as exc:
            raise SettingsError(f"SBA_BILLING__BASE_URL: {exc}") from exc
        reporter = StripeMeterReporter(
            client,
            api_key=key,
            event_name=b.event_name,
            base_url=b.base_url,
            api_version=b.api_version,
        )
        yield Metering(customers, ReportRunUsage(uow, reporter, customers))
        await client.aclose()

    manage_dead_letters = provide(ManageDeadLetters)

    @provide
    def index_document(
        self,
        store: KnowledgeStore,
        clock: Clock,
        settings: Settings,
        cache: Cache,
        embeddings: Embeddings,
    ) -> IndexDocument:
        kb = settings.kb
        vectors: ChunkVectors = store  # type: ignore[assignment]
        return IndexDocument(
            store,
            clock,
            chunk_chars=kb.chunk_chars,
            chunk_overlap=kb.chunk_overlap,
            cache=cache,
            last_attempt=settings.worker.max_attempts,
            embedder=embeddings.embedder,
            vectors=vectors if embeddings.embedder is not None else None,
            embed_batch=kb.embeddings.batch_size,
        )

    @provide
    async def content_client(self, settings: Settings) -> AsyncIterator[ContentClient]:
        endpoints = [c.endpoint for c in settings.content.tenants.values() if c.kind == "basehub"]
        try:
            client = guarded_client(endpoints, timeout=httpx.Timeout(10.0, connect=5.0))
        except ValueError as exc:
            raise SettingsError(f"SBA_CONTENT__TENANTS: a BaseHub endpoint: {exc}") from exc
        yield ContentClient(client)
        await client.aclose()

    @provide
    def content_sources(self, settings: Settings, client: ContentClient) -> ContentSources:
        sources: dict[str, ContentSource] = {}
        hooks: dict[str, bytes] = {}
        for slug, cfg in settings.content.tenants.items():
            sources[slug] = _source(slug, cfg, client)
            secret = read_secret(
                cfg.webhook_secret,
                cfg.webhook_secret_file,
                f"SBA_CONTENT__TENANTS ({slug}): webhook_secret_file",
            )
            if secret:
                hooks[slug] = secret.encode()
        return StaticContentSources(sources, hooks)

    @provide
    def read_content(
        self, sources: ContentSources, cache: Cache, settings: Settings, telemetry: Telemetry
    ) -> ReadContent:
        return ReadContent(
            sources, counted(cache, telemetry, "content"), ttl_s=settings.content.cache_ttl_s
        )

    @provide
    def read_document(
        self,
        store: KnowledgeStore,
        content: ReadContent,
        cache: Cache,
        settings: Settings,
        telemetry: Telemetry,
    ) -> ReadDocument:
        return ReadDocument(
            store,
            content,
            counted(cache, telemetry, "documents"),
            ttl_s=settings.content.cache_ttl_s,
        )

    @provide
    def sync_content(
        self, sources: ContentSources, ingest: IngestDocument, store: KnowledgeStore
    ) -> SyncContent:
        return SyncContent(sources, ingest, store)

    @provide
    def content_webhook(
        self,
        sources: ContentSources,
        replay: ReplayGuard,
        cache: Cache,
        queue: JobQueue,
        uow: UnitOfWork,
        settings: Settings,
    ) -> HandleContentWebhook:
        return HandleContentWebhook(
            sources, replay, cache, queue, uow, replay_window_s=settings.content.replay_window_s
        )

    @provide
    def template_engine(self) -> TemplateEngine:
        return SandboxedTemplateEngine()

    @provide
    def converter(self) -> DocumentConverter:
        return MarkdownConverter()

    @provide
    async def blob_store(self, settings: Settings) -> AsyncIterator[BlobStore]:
        r = settings.render
        if r.blob_store == "local":
            yield LocalBlobStore(r.blob_path or _artifacts_dir(settings.data_dir))
            return
        if r.blob_store != "s3":
            raise SettingsError(f"SBA_RENDER__BLOB_STORE: {r.blob_store!r} is not one of local, s3")
        s3 = r.s3
        secret = read_secret(s3.secret_key, s3.secret_key_file, "SBA_RENDER__S3__SECRET_KEY_FILE")
        if not s3.bucket or not s3.access_key or not secret:
            raise SettingsError(
                "SBA_RENDER__BLOB_STORE=s3 needs SBA_RENDER__S3__BUCKET, …__ACCESS_KEY and "
                "…__SECRET_KEY (or …__SECRET_KEY_FILE)"
            )
        try:
            client = guarded_client([s3.endpoint], timeout=httpx.Timeout(s3.timeout_s, connect=5.0))
        except ValueError as exc:
            raise SettingsError(f"SBA_RENDER__S3__ENDPOINT: {exc}") from exc
        try:
            store = S3BlobStore(
                client,
                endpoint=s3.endpoint,
                bucket=s3.bucket,
                region=s3.region,
                credentials=Credentials(s3.access_key, secret, s3.session_token or None),
                prefix=s3.prefix,
                retry=HttpRetryPolicy(max_attempts=s3.max_attempts),
            )
        except ValueError as exc:
            await client.aclose()
            raise SettingsError(f"SBA_RENDER__S3: {exc}") from exc
        yield store
        await client.aclose()

    @provide
    def render_jobs(self, db: Database) -> RenderJobRepository:
        return SqlaRenderJobRepository(db)

    @provide
    def link_signer(self, settings: Settings, clock: Clock) -> LinkSigner:
        r = settings.render
        secret = read_secret(r.link_secret, r.link_secret_file, "SBA_RENDER__LINK_SECRET_FILE")
        try:
            return LinkSigner(
                secret.encode() if secret else secrets.token_bytes(32), clock, ttl_s=r.link_ttl_s
            )
        except ValueError as exc:
            raise SettingsError(f"SBA_RENDER__LINK_SECRET: {exc}") from exc

    request_render = provide(RequestRender)
    get_render = provide(GetRender)
    download_artifact = provide(DownloadArtifact)

    @provide
    def execute_render(
        self,
        renders: RenderJobRepository,
        engine: TemplateEngine,
        converter: DocumentConverter,
        blobs: BlobStore,
        knowledge: KnowledgeStore,
        content: ReadContent,
        clock: Clock,
        settings: Settings,
    ) -> ExecuteRender:
        return ExecuteRender(
            renders,
            engine,
            converter,
            blobs,
            knowledge,
            content,
            clock,
            last_attempt=settings.worker.max_attempts,
        )


async def start_jobs(container: AsyncContainer) -> AsyncBroker:
    """Connects the container's broker to the container (each job runs in its own request
    scope) and starts it; harmless to call twice."""
    broker = await container.get(AsyncBroker)
    # Every job handler (and what it needs: content sources, the blob store) is built now, so
    # a setting that cannot work stops start-up instead of failing the first job.
    await container.get(RunJob)
    await container.get(DownloadArtifact)
    if not broker.state.get("sba_started"):
        setup_taskiq_dishka(container, broker)
        await broker.startup()
        broker.state["sba_started"] = True
    return broker


async def work(container: AsyncContainer, settings: Settings) -> None:
    """``sba worker``: consumes jobs until cancelled."""
    broker = await start_jobs(container)
    if is_in_process(broker):
        raise SettingsError(
            "SBA_BROKER_URL is unset: jobs run inside `sba serve`; a worker needs a broker "
            "(redis://…)"
        )
    # SIGTERM or Ctrl-C: take no new job, finish the running ones, exit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Where the loop cannot take signal handlers (Windows, a non-main thread) the worker
        # still stops when cancelled; its running jobs are then redelivered.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    telemetry = await container.get(Telemetry)
    t = settings.telemetry
    exposition = None
    if telemetry.metrics is not None and t.worker_metrics_port:
        exposition = await serve_metrics(
            telemetry.metrics,
            t.worker_metrics_host,
            t.worker_metrics_port,
            token=telemetry.metrics_token,
        )
        log.info("worker metrics on http://%s:%d/metrics", *exposition.sockets[0].getsockname()[:2])
    try:
        await run_worker(
            broker,
            max_async_tasks=settings.worker.concurrency,
            redeliver_after_s=settings.worker.redeliver_after_s,
            stop=stop,
            grace_s=settings.worker.shutdown_grace_s,
        )
    finally:
        if exposition is not None:
            exposition.close()
        telemetry.shutdown()
    log.info("worker stopped")
