"""Dishka providers and the one container factory used by HTTP, worker and CLI.

Use cases and the unit of work are stateless, so they live in APP scope and are built once;
only what belongs to a request (the principal) is REQUEST-scoped. Tests pass extra providers,
which are appended last and so override what came before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from dishka import AsyncContainer, Provider, Scope, from_context, make_async_container, provide
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.auth.jwt import JwtVerifier
from adapters.llm.anthropic import AnthropicChatModel
from adapters.llm.cache import CachedResponses
from adapters.llm.embeddings import OpenAIEmbedder
from adapters.llm.http import HttpRetryPolicy
from adapters.llm.offline import LoadTestChatModel, OfflineChatModel
from adapters.llm.openai import OpenAiChatModel
from adapters.memory.cache import MemoryCache
from adapters.memory.clock import SystemClock
from adapters.memory.event_log import MemoryRunEventLog
from adapters.memory.idempotency import MemoryIdempotencyStore
from adapters.memory.journal import TransactionalRunJournal
from adapters.memory.launcher import AsyncioRunLauncher
from adapters.memory.leases import MemoryRunLeases
from adapters.memory.rate_limiter import MemoryConcurrencyGuard, MemoryRateLimiter
from adapters.memory.replay import MemoryReplayGuard
from adapters.memory.tools import MemoryToolAudit, StaticToolPolicy
from adapters.observability.instrumented import (
    ContentLoggingChatModel,
    ObservedChatModel,
    ObservedRunExecutor,
    ObservedRunJournal,
    ObservedToolRegistry,
)
from adapters.observability.telemetry import Telemetry
from adapters.observability.tracing import trace_engine
from adapters.outbound import guarded_client
from adapters.postgres.journal import PostgresRunJournal
from adapters.postgres.knowledge import AsyncpgKnowledgeStore
from adapters.redis.cache import RedisCache
from adapters.redis.client import RedisStore, create_client
from adapters.redis.event_log import RedisRunEventLog
from adapters.redis.idempotency import RedisIdempotencyStore
from adapters.redis.leases import RedisRunLeases
from adapters.redis.rate_limiter import RedisConcurrencyGuard, RedisRateLimiter
from adapters.redis.replay import RedisReplayGuard
from adapters.redis.wire import Multiplexer
from adapters.sqla.export import SqlaTenantExport
from adapters.sqla.interrupts import SqlaInterruptStore
from adapters.sqla.knowledge import SqliteKnowledgeStore
from adapters.sqla.migrator import AlembicSchemaMigrator
from adapters.sqla.scope import Database
from adapters.sqla.sqlite_journal import SqliteRunJournal
from adapters.sqla.tasks import SqlaTaskRepository
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from adapters.sqla.usage import SqlaUsageLedger
from adapters.tools.builtin import BuiltinToolRegistry, RenderTools
from application.billing.use_cases import MeteredRunJournal
from application.content.ports import ReplayGuard
from application.content.use_cases import ReadDocument
from application.conversation.approvals import PendingApprovals
from application.conversation.instructions import (
    DEFAULT_INSTRUCTIONS,
    AgentInstructions,
    InstructedChatModel,
    TenantInstructions,
)
from application.conversation.models import (
    CachingChatModel,
    FallbackChatModel,
    NamedModel,
    TenantRoutedChatModel,
    UnavailableChatModel,
)
from application.conversation.ports import (
    ChatModel,
    InterruptStore,
    RunEventLog,
    RunJournal,
    RunLauncher,
    RunLeases,
)
from application.conversation.recovery import RecoverLostRuns
from application.conversation.use_cases import (
    CancelRun,
    ExecuteRun,
    GetRun,
    GetThreadMessages,
    StartRun,
    TailRun,
)
from application.jobs.ports import JobQueue
from application.knowledge.ports import ChunkVectors, KnowledgeSearch, KnowledgeStore
from application.knowledge.use_cases import (
    CachedKnowledgeSearch,
    DeleteDocument,
    GetDocument,
    HybridKnowledgeSearch,
    IngestDocument,
    ListDocuments,
    SearchKnowledge,
)
from application.ports import Cache, Clock, IdempotencyStore, SchemaMigrator, UnitOfWork
from application.quota.auth_failures import AuthFailureLimit
from application.quota.ports import ConcurrencyGuard, RateLimiter, UsageLedger
from application.quota.use_cases import AdmitRequest, BudgetGuard, GetUsage, RunSlots
from application.render.use_cases import GetRender, LinkSigner, RequestRender
from application.tenancy.claims import ClaimMapping
from application.tenancy.ports import TenantExport
from application.tenancy.profiles import ProfileRules, TenantProfiles
from application.tenancy.use_cases import (
    Authenticate,
    CreateApiKey,
    CreateTenant,
    EnsureDemoTenant,
    ManageTenants,
)
from application.tools.policy import ProfiledToolPolicy
from application.tools.ports import TaskRepository, ToolAudit, ToolPolicy, ToolRegistry
from application.tools.use_cases import InvokeTool, ListTools
from domain.billing.prices import Price, PriceTable
from domain.errors import DomainError
from domain.quota.budget import BudgetPeriod, TokenBudget
from domain.quota.policy import Plan, QuotaPolicy
from domain.tenancy.model import Role
from entrypoints.ioc.jobs import Embeddings, JobProvider, Metering
from entrypoints.ioc.secrets import read_secret
from entrypoints.ioc.telemetry import build_telemetry, counted
from entrypoints.ioc.workspace import WorkspaceProvider
from entrypoints.settings import (
    JwtSettings,
    PlanSettings,
    ProviderSettings,
    RateLimitSettings,
    Settings,
    SettingsError,
)


def _asyncpg_dsn(settings: Settings) -> str:
    """The database URL as asyncpg takes it (the hot paths that skip SQLAlchemy)."""
    url = make_url(settings.effective_database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class RedisHolder:
    """The shared Redis store, or None when ``SBA_REDIS_URL`` is unset (in-process adapters)."""

    store: RedisStore | None


def _plan(name: str, rl: RateLimitSettings, over: PlanSettings | None = None) -> Plan:
    o = over or PlanSettings()

    def pick(value: object, default: object) -> Any:
        return default if value is None else value

    return Plan(
        name=name,
        tenant_per_minute=pick(o.per_minute, rl.default_per_minute),
        tenant_routes=pick(o.routes, rl.routes),
        principal_per_minute=pick(o.principal_per_minute, rl.principal_per_minute),
        principal_routes=pick(o.principal_routes, rl.principal_routes),
        concurrent_runs=pick(o.concurrent_runs, rl.concurrent_runs),
        concurrent_runs_per_principal=pick(
            o.concurrent_runs_per_principal, rl.concurrent_runs_per_principal
        ),
        budget=TokenBudget(
            period=BudgetPeriod(pick(o.budget_period, rl.budget_period)),
            soft_tokens=pick(o.token_budget_soft, rl.token_budget_soft),
            hard_tokens=pick(o.token_budget, rl.token_budget),
        ),
    )


def quota_policy(settings: Settings) -> QuotaPolicy:
    rl = settings.rate_limit
    try:
        return QuotaPolicy(
            default=_plan("default", rl),
            plans={name: _plan(name, rl, over) for name, over in rl.plans.items()},
            tenant_plans=rl.tenants,
            address_per_minute=rl.address_per_minute,
            burst_ratio=rl.burst_ratio,
        )
    except DomainError as exc:
        raise SettingsError(f"SBA_RATE_LIMIT: {exc.message}") from exc


def price_table(settings: Settings) -> PriceTable:
    b = settings.billing
    try:
        return PriceTable(
            {
                name: Price(Decimal(str(p.input_per_million)), Decimal(str(p.output_per_million)))
                for name, p in b.prices.items()
            },
            currency=b.currency,
        )
    except DomainError as exc:
        raise SettingsError(f"SBA_BILLING__PRICES: {exc.message}") from exc


class InfrastructureProvider(Provider):
    scope = Scope.APP
    settings = from_context(Settings, scope=Scope.APP)
    telemetry = from_context(Telemetry, scope=Scope.APP)

    @provide
    async def database(self, settings: Settings, telemetry: Telemetry) -> AsyncIterator[Database]:
        pg = settings.postgres

        def engine(url: str) -> AsyncEngine:
            return create_engine_for(
                url, pooler=pg.pooler, pool_size=pg.pool_size, max_overflow=pg.max_overflow
            )

        main = engine(settings.effective_database_url)
        if (tracer := telemetry.statement_tracer) is not None:
            trace_engine(main, tracer)
        admin = engine(settings.database_admin_url) if settings.database_admin_url else None
        yield Database(main, admin_engine=admin, app_role=pg.app_role)
        await main.dispose()
        if admin is not None:
            await admin.dispose()

    @provide
    def unit_of_work(self, db: Database) -> UnitOfWork:
        return SqlaUnitOfWork(db)

    @provide
    async def run_journal(
        self,
        settings: Settings,
        uow: UnitOfWork,
        queue: JobQueue,
        metering: Metering,
        telemetry: Telemetry,
    ) -> AsyncIterator[RunJournal]:
        url = make_url(settings.effective_database_url)
        path = url.database if url.get_backend_name() == "sqlite" else None
        inner: RunJournal
        if url.get_backend_name() == "postgresql":
            pg = settings.postgres
            inner = PostgresRunJournal(
                _asyncpg_dsn(settings),
                app_role=pg.app_role or None,
                pooler=pg.pooler,
                connections=pg.journal_connections,
            )
        elif path and path != ":memory:":
            inner = SqliteRunJournal(path)
        else:
            inner = TransactionalRunJournal(uow)
        journal: RunJournal = inner
        # Metered tenants' finished runs queue their usage report.
        if metering.customers.enabled:
            journal = MeteredRunJournal(journal, queue, metering.customers)
        if telemetry.metrics is not None or telemetry.tracer is not None:
            journal = ObservedRunJournal(
                journal,
                metrics=telemetry.metrics,
                prices=price_table(settings),
                tracer=telemetry.tracer,
            )
        yield journal
        if isinstance(inner, SqliteRunJournal):
            inner.close()
        elif isinstance(inner, PostgresRunJournal):
            await inner.close()

    @provide
    def migrator(self, settings: Settings) -> SchemaMigrator:
        return AlembicSchemaMigrator(
            settings.effective_admin_url, app_role=settings.postgres.app_role
        )

    @provide
    def clock(self) -> Clock:
        return SystemClock()

    @provide
    async def event_log(self, settings: Settings, redis: RedisHolder) -> AsyncIterator[RunEventLog]:
        runs = settings.runs
        if redis.store is not None:
            log = RedisRunEventLog(
                redis.store,
                max_events=runs.max_events_per_run,
                retention_s=runs.retention_s,
                max_finished_local=runs.max_finished_runs,
            )
            yield log
            await log.flushed()
            return
        yield MemoryRunEventLog(
            max_events_per_run=settings.runs.max_events_per_run,
            retention_s=settings.runs.retention_s,
            max_finished_runs=settings.runs.max_finished_runs,
        )

    @provide
    async def redis(self, settings: Settings, telemetry: Telemetry) -> AsyncIterator[RedisHolder]:
        if not settings.redis_url:
            yield RedisHolder(None)
            return
        cfg = settings.redis
        password = read_secret(None, cfg.password_file, "SBA_REDIS__PASSWORD_FILE")
        try:
            client = create_client(
                settings.redis_url,
                cluster=cfg.cluster,
                password=password,
                tls_ca_file=cfg.tls_ca_file,
                tls_verify=cfg.tls_verify,
                timeout_s=cfg.timeout_s,
                connect_timeout_s=cfg.connect_timeout_s,
                max_connections=cfg.max_connections,
            )
            # Redis Cluster spreads keys over nodes: there, each call takes a pooled
            # connection to the node of its slot. Otherwise one shared, pipelined connection.
            mux = (
                None
                if cfg.cluster
                else Multiplexer(
                    settings.redis_url,
                    password=password,
                    tls_ca_file=cfg.tls_ca_file,
                    tls_verify=cfg.tls_verify,
                    timeout_s=cfg.timeout_s,
                    connect_timeout_s=cfg.connect_timeout_s,
                )
            )
            store = RedisStore(
                client,
                mux=mux,
                prefix=cfg.key_prefix,
                retry_after_s=cfg.retry_after_failure_s,
                tracer=telemetry.statement_tracer,
                max_calls=cfg.max_connections,
                call_wait_s=cfg.pool_timeout_s,
            )
        except ValueError as exc:
            raise SettingsError(f"SBA_REDIS_URL / SBA_REDIS__KEY_PREFIX: {exc}") from exc
        yield RedisHolder(store)
        await store.close()

    @provide
    def cache(self, redis: RedisHolder, settings: Settings) -> Cache:
        if redis.store is not None:
            return RedisCache(redis.store)
        return MemoryCache(max_entries=settings.cache.max_entries)

    @provide
    def replay_guard(self, redis: RedisHolder) -> ReplayGuard:
        if redis.store is not None:
            return RedisReplayGuard(redis.store)
        return MemoryReplayGuard()

    @provide
    def idempotency_store(self, redis: RedisHolder) -> IdempotencyStore:
        if redis.store is not None:
            return RedisIdempotencyStore(redis.store)
        return MemoryIdempotencyStore()

    @provide
    def quota_policy(self, settings: Settings) -> QuotaPolicy:
        return quota_policy(settings)

    @provide
    def tenant_profiles(self) -> TenantProfiles:
        return TenantProfiles()

    @provide
    def usage_ledger(self, db: Database) -> UsageLedger:
        return SqlaUsageLedger(db)

    @provide
    def budget_guard(
        self,
        ledger: UsageLedger,
        policy: QuotaPolicy,
        clock: Clock,
        settings: Settings,
        profiles: TenantProfiles,
    ) -> BudgetGuard:
        return BudgetGuard(
            ledger, policy, clock, ttl_ms=settings.rate_limit.budget_cache_ms, profiles=profiles
        )

    @provide
    def rate_limiter(self, redis: RedisHolder) -> RateLimiter:
        if redis.store is not None:
            return RedisRateLimiter(redis.store)
        return MemoryRateLimiter()

    @provide
    def run_leases(self, redis: RedisHolder, settings: Settings) -> RunLeases:
        if redis.store is not None:
            return RedisRunLeases(redis.store, term_s=settings.runs.lease_s)
        return MemoryRunLeases(term_s=settings.runs.lease_s)

    @provide
    def concurrency_guard(self, redis: RedisHolder, limiter: RateLimiter) -> ConcurrencyGuard:
        if redis.store is not None:
            return RedisConcurrencyGuard(redis.store)
        # Runs are held to the rate counters of the process's limiter.
        assert isinstance(limiter, MemoryRateLimiter)
        return MemoryConcurrencyGuard(limiter=limiter)

    @provide
    async def knowledge_store(
        self, db: Database, settings: Settings
    ) -> AsyncIterator[KnowledgeStore]:
        if not db.is_postgres:
            yield SqliteKnowledgeStore(db)
            return
        # Searches go through asyncpg, one round trip each (ADR 0046).
        pg = settings.postgres
        store = AsyncpgKnowledgeStore(
            db,
            _asyncpg_dsn(settings),
            app_role=pg.app_role or None,
            pooler=pg.pooler,
            connections=pg.search_connections,
        )
        yield store
        await store.close()

    @provide
    async def embeddings(self, settings: Settings) -> AsyncIterator[Embeddings]:
        e = settings.kb.embeddings
        if not e.model:
            yield Embeddings(None)
            return
        key = read_secret(None, e.api_key_file, "SBA_KB__EMBEDDINGS__API_KEY_FILE") or e.api_key
        client = outbound_client(
            [e.base_url], httpx.Timeout(e.timeout_s, connect=5.0), "SBA_KB__EMBEDDINGS__BASE_URL"
        )
        try:
            embedder = OpenAIEmbedder(
                client,
                base_url=e.base_url,
                model=e.model,
                api_key=key,
                dimensions=e.dimensions,
                retry=HttpRetryPolicy(max_attempts=e.max_attempts),
            )
        except ValueError as exc:
            await client.aclose()
            raise SettingsError(f"SBA_KB__EMBEDDINGS: {exc}") from exc
        yield Embeddings(embedder)
        await client.aclose()

    @provide
    def knowledge_search(
        self, store: KnowledgeStore, embeddings: Embeddings, settings: Settings
    ) -> KnowledgeSearch:
        if embeddings.embedder is None:
            return store
        vectors: ChunkVectors = store  # type: ignore[assignment]
        return HybridKnowledgeSearch(
            store, vectors, embeddings.embedder, pool=settings.kb.embeddings.pool
        )

    @provide
    def tasks(self, db: Database) -> TaskRepository:
        return SqlaTaskRepository(db)

    @provide
    def tool_registry(
        self,
        knowledge: KnowledgeSearch,
        tasks: TaskRepository,
        clock: Clock,
        cache: Cache,
        documents: ReadDocument,
        request_render: RequestRender,
        get_render: GetRender,
        links: LinkSigner,
        settings: Settings,
        telemetry: Telemetry,
    ) -> ToolRegistry:
        registry: ToolRegistry = BuiltinToolRegistry(
            CachedKnowledgeSearch(
                knowledge,
                counted(cache, telemetry, "kb_search"),
                ttl_s=settings.content.cache_ttl_s,
            ),
            documents,
            tasks,
            clock,
            renders=RenderTools(
                request_render, get_render, links, wait_s=settings.render.tool_wait_s
            ),
        )
        if telemetry.metrics is None and telemetry.tracer is None:
            return registry
        return ObservedToolRegistry(registry, tracer=telemetry.tracer, metrics=telemetry.metrics)

    @provide
    def tool_policy(self, settings: Settings, profiles: TenantProfiles) -> ToolPolicy:
        tools = settings.tools
        static = StaticToolPolicy(
            tools.allow,
            tools.tenants,
            approval=tools.approval,
            approval_per_tenant=tools.approval_tenants,
        )
        return ProfiledToolPolicy(static, profiles)

    @provide
    def interrupt_store(self, db: Database) -> InterruptStore:
        return SqlaInterruptStore(db)

    @provide
    def tool_audit(self) -> ToolAudit:
        return MemoryToolAudit()

    @provide
    async def chat_model(
        self,
        settings: Settings,
        knowledge: KnowledgeSearch,
        clock: Clock,
        store: Cache,
        telemetry: Telemetry,
        profiles: TenantProfiles,
    ) -> AsyncIterator[ChatModel]:
        llm = settings.llm
        offline = OfflineChatModel(
            knowledge=knowledge, token_delay_s=llm.offline_token_delay_ms / 1000
        )
        instructions = agent_instructions(settings)
        clients: list[httpx.AsyncClient] = []
        named: dict[str, NamedModel] = {}
        for p in llm.chain:
            if p.kind == "offline":
                named[p.name] = NamedModel(p.name, offline)
                continue
            # One client per upstream, so pools and timeouts never mix between providers.
            upstream = "https://api.anthropic.com" if p.kind == "anthropic" else ""
            client = outbound_client(
                [p.base_url or upstream],
                httpx.Timeout(p.timeout_s, connect=5.0),
                f"SBA_LLM__CHAIN ({p.name}) base_url",
            )
            clients.append(client)
            instructed = InstructedChatModel(_provider_model(p, client), instructions)
            named[p.name] = NamedModel(p.name, instructed)

        kinds = {p.name: p for p in llm.chain}
        observe = telemetry.tracer is not None or telemetry.metrics is not None
        responses = counted(store, telemetry, "llm_responses")

        def observed(position: int, member: NamedModel) -> NamedModel:
            if not observe:
                return member
            p = kinds[member.name]
            return NamedModel(
                member.name,
                ObservedChatModel(
                    member.model,
                    name=member.name,
                    provider=p.kind,
                    model=p.model or "",
                    fallback=position > 0,
                    tracer=telemetry.tracer,
                    metrics=telemetry.metrics,
                ),
            )

        def build(names: Sequence[str], cache: bool) -> ChatModel:
            try:
                # "offline" names the built-in responder when the chain does not define it.
                chain = [
                    observed(i, named[n])
                    for i, n in enumerate(names)
                    if n in named or n != "offline"
                ]
            except KeyError as exc:
                raise SettingsError(
                    f"SBA_LLM__TENANTS: {exc.args[0]!r} is not a name in SBA_LLM__CHAIN"
                ) from exc
            model: ChatModel
            if chain:
                fallback = FallbackChatModel(
                    chain,
                    clock,
                    threshold=llm.breaker_threshold,
                    cool_down_ms=int(llm.breaker_cool_down_s * 1000),
                )
                if telemetry.metrics is not None:
                    telemetry.metrics.watch_models(fallback.stats)
                model = fallback
            elif observe:
                model = ObservedChatModel(
                    offline,
                    name="offline",
                    provider="offline",
                    model="offline",
                    fallback=False,
                    tracer=telemetry.tracer,
                    metrics=telemetry.metrics,
                )
            else:
                model = offline
            if cache and llm.cache_ttl_s > 0:
                model = CachingChatModel(
                    model,
                    CachedResponses(responses),
                    model_name=chain[0].name if chain else "offline",
                    ttl_s=llm.cache_ttl_s,
                )
            return model

        def chain_of(slug: str) -> tuple[list[str], bool]:
            flags = llm.tenants.get(slug)
            if flags is None:
                return list(named), True
            return (
                list(flags.chain) if flags.chain is not None else list(named),
                flags.cache if flags.cache is not None else True,
            )

        def restrict(slug: str, allowed: frozenset[str]) -> ChatModel:
            """The tenant's chain (its settings entry's, else the deployment's) kept to the
            models its profile allows, in the chain's order."""
            names, cache = chain_of(slug)
            kept = [n for n in names if n in allowed] if names else []
            if names and not kept:
                return UnavailableChatModel(
                    "none of the models this tenant may use is in its chain"
                )
            return build(kept, cache)

        default = build(list(named), True)
        model: ChatModel = TenantRoutedChatModel(
            default,
            {slug: build(*chain_of(slug)) for slug in llm.tenants},
            profiles=profiles,
            restrict=restrict,
        )
        if telemetry.content_tenants:
            model = ContentLoggingChatModel(model, telemetry.content_tenants)
        if llm.loadtest:
            model = LoadTestChatModel(model)
            if observe:
                # Scripted runs never reach the chain: observed here, so that benchmarks pay
                # for a model span like any run (runs it hands on are observed twice).
                model = ObservedChatModel(
                    model,
                    name="loadtest",
                    provider="loadtest",
                    model="loadtest",
                    fallback=False,
                    tracer=telemetry.tracer,
                    metrics=telemetry.metrics,
                )
        yield model
        for client in clients:
            await client.aclose()

    @provide
    def launcher(self, execute: ExecuteRun, telemetry: Telemetry) -> AsyncioRunLauncher:
        tracer = telemetry.tracer
        launcher = AsyncioRunLauncher(
            execute if tracer is None else ObservedRunExecutor(execute, tracer)
        )
        if telemetry.metrics is not None:
            telemetry.metrics.watch_runs(lambda: launcher.active)
        return launcher

    @provide
    def run_launcher(self, launcher: AsyncioRunLauncher) -> RunLauncher:
        return launcher


def model_names(settings: Settings) -> frozenset[str]:
    """The names a tenant's model list may use: the chain's entries, or the built-in
    responder's ``offline`` when no chain is configured."""
    return frozenset(p.name for p in settings.llm.chain) or frozenset({"offline"})


def _jwt_verifier(cfg: JwtSettings, client: httpx.AsyncClient) -> JwtVerifier:
    for name, path in (("tenant_claim", cfg.tenant_claim), ("role_claim", cfg.role_claim)):
        if not path.strip():
            raise SettingsError(f"SBA_AUTH__JWT__{name.upper()} cannot be empty")
        if path.split(".", 1)[0] == "user_metadata":
            raise SettingsError(
                f"SBA_AUTH__JWT__{name.upper()}: user_metadata is written by the user "
                "and cannot say which tenant or role they have; use app_metadata"
            )
    secret = cfg.hs256_secret
    if cfg.hs256_secret_file:
        try:
            secret = Path(cfg.hs256_secret_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"SBA_AUTH__JWT__HS256_SECRET_FILE: {exc}") from exc
    if "HS256" in cfg.algorithms and not secret:
        raise SettingsError("SBA_AUTH__JWT__ALGORITHMS: HS256 needs SBA_AUTH__JWT__HS256_SECRET")
    return JwtVerifier(
        client,
        issuer=cfg.issuer,
        audience=cfg.audience,
        jwks_url=cfg.jwks_url or cfg.issuer.rstrip("/") + "/.well-known/jwks.json",
        algorithms=cfg.algorithms,
        hs256_secret=secret,
        leeway_s=cfg.leeway_s,
        refresh_interval_s=cfg.jwks_refresh_s,
    )


def _secret(p: ProviderSettings) -> str | None:
    return read_secret(p.api_key, p.api_key_file, f"SBA_LLM__CHAIN ({p.name}): api_key_file")


def outbound_client(urls: Sequence[str], timeout: httpx.Timeout, what: str) -> httpx.AsyncClient:
    """A client that reaches only the origins of ``urls`` (the SSRF guard)."""
    try:
        return guarded_client(urls, timeout=timeout)
    except ValueError as exc:
        raise SettingsError(f"{what}: {exc}") from exc


def agent_instructions(settings: Settings) -> AgentInstructions:
    llm = settings.llm
    own = read_secret(llm.system_prompt, llm.system_prompt_file, "SBA_LLM__SYSTEM_PROMPT_FILE")
    return AgentInstructions(
        instructions=own if own else DEFAULT_INSTRUCTIONS,
        language=llm.language,
        tenants={
            slug: TenantInstructions(instructions=t.system_prompt, language=t.language)
            for slug, t in llm.tenants.items()
        },
    )


def _provider_model(p: ProviderSettings, client: httpx.AsyncClient) -> ChatModel:
    retry = HttpRetryPolicy(max_attempts=p.max_attempts)
    if p.kind == "anthropic":
        key = _secret(p)
        if not key:
            raise SettingsError(f"SBA_LLM__CHAIN ({p.name}): an Anthropic model needs an api key")
        return AnthropicChatModel(
            client,
            base_url=p.base_url or "https://api.anthropic.com",
            api_key=key,
            model=p.model,
            max_tokens=p.max_tokens,
            retry=retry,
        )
    if not p.base_url or not p.model:
        raise SettingsError(f"SBA_LLM__CHAIN ({p.name}): base_url and model are required")
    return OpenAiChatModel(
        client,
        base_url=p.base_url,
        api_key=_secret(p),
        model=p.model,
        provider_name=p.name,
        retry=retry,
    )


class UseCaseProvider(Provider):
    scope = Scope.APP

    list_tools = provide(ListTools)

    @provide
    def start_run(
        self,
        journal: RunJournal,
        events: RunEventLog,
        launcher: RunLauncher,
        clock: Clock,
        interrupts: InterruptStore,
        uow: UnitOfWork,
        slots: RunSlots,
        budget: BudgetGuard,
        leases: RunLeases,
    ) -> StartRun:
        return StartRun(
            journal, events, launcher, clock, interrupts, uow, slots, budget, leases=leases
        )

    @provide
    def recover_lost_runs(
        self,
        leases: RunLeases,
        uow: UnitOfWork,
        journal: RunJournal,
        events: RunEventLog,
        clock: Clock,
    ) -> RecoverLostRuns:
        return RecoverLostRuns(leases, uow, journal, events, clock)

    @provide
    def execute_run(
        self,
        journal: RunJournal,
        events: RunEventLog,
        model: ChatModel,
        clock: Clock,
        invoke_tool: InvokeTool,
        list_tools: ListTools,
        interrupts: InterruptStore,
        slots: RunSlots,
        settings: Settings,
        leases: RunLeases,
    ) -> ExecuteRun:
        return ExecuteRun(
            journal,
            events,
            model,
            clock,
            invoke_tool,
            list_tools,
            interrupts,
            max_steps=settings.runs.max_steps,
            approval_ttl_ms=int(settings.tools.approval_ttl_s * 1000),
            slots=slots,
            leases=leases,
        )

    @provide
    def invoke_tool(
        self,
        registry: ToolRegistry,
        policy: ToolPolicy,
        audit: ToolAudit,
        clock: Clock,
        settings: Settings,
    ) -> InvokeTool:
        return InvokeTool(registry, policy, audit, clock, timeout_s=settings.tools.timeout_s)

    tail_run = provide(TailRun)

    @provide
    def admit_request(
        self,
        limiter: RateLimiter,
        policy: QuotaPolicy,
        settings: Settings,
        telemetry: Telemetry,
        profiles: TenantProfiles,
    ) -> AdmitRequest:
        admit = AdmitRequest(
            limiter,
            policy,
            fail_open=settings.rate_limit.fail_mode == "open",
            profiles=profiles,
        )
        if telemetry.metrics is not None:
            telemetry.metrics.watch_limiter("requests", admit.stats)
        return admit

    @provide
    def auth_failure_limit(self, limiter: RateLimiter, settings: Settings) -> AuthFailureLimit:
        rl = settings.rate_limit
        return AuthFailureLimit(
            limiter,
            per_address_per_minute=rl.auth_failures_per_minute,
            per_key_per_minute=rl.auth_failures_per_key_per_minute,
        )

    @provide
    def run_slots(
        self,
        guard: ConcurrencyGuard,
        policy: QuotaPolicy,
        settings: Settings,
        telemetry: Telemetry,
        profiles: TenantProfiles,
        admit: AdmitRequest,
    ) -> RunSlots:
        rl = settings.rate_limit
        slots = RunSlots(
            guard,
            policy,
            lease_s=rl.run_lease_s,
            fail_open=rl.fail_mode == "open",
            profiles=profiles,
            rates=admit,
        )
        if telemetry.metrics is not None:
            telemetry.metrics.watch_limiter("runs", slots.stats)
        return slots

    cancel_run = provide(CancelRun)
    get_run = provide(GetRun)
    get_thread_messages = provide(GetThreadMessages)
    pending_approvals = provide(PendingApprovals)
    create_tenant = provide(CreateTenant)
    create_api_key = provide(CreateApiKey)

    @provide
    def manage_tenants(
        self,
        uow: UnitOfWork,
        clock: Clock,
        profiles: TenantProfiles,
        policy: QuotaPolicy,
        registry: ToolRegistry,
        settings: Settings,
    ) -> ManageTenants:
        rules = ProfileRules(
            plans=policy.names,
            tools=frozenset(spec.name for spec in registry.specs()),
            models=model_names(settings),
        )
        return ManageTenants(uow, clock, profiles=profiles, rules=rules)

    @provide
    def get_usage(
        self, ledger: UsageLedger, budget: BudgetGuard, clock: Clock, settings: Settings
    ) -> GetUsage:
        return GetUsage(ledger, budget, clock, price_table(settings))

    @provide
    def tenant_export(self, db: Database) -> TenantExport:
        return SqlaTenantExport(db)

    ensure_demo_tenant = provide(EnsureDemoTenant)
    get_document = provide(GetDocument)
    list_documents = provide(ListDocuments)

    @provide
    def delete_document(self, store: KnowledgeStore, cache: Cache, clock: Clock) -> DeleteDocument:
        return DeleteDocument(store, cache, clock)

    search_knowledge = provide(SearchKnowledge)

    @provide
    def ingest_document(
        self,
        store: KnowledgeStore,
        clock: Clock,
        queue: JobQueue,
        settings: Settings,
        cache: Cache,
    ) -> IngestDocument:
        return IngestDocument(
            store, clock, queue, max_bytes=settings.kb.max_document_bytes, cache=cache
        )

    @provide
    async def authenticate(
        self, uow: UnitOfWork, clock: Clock, settings: Settings, profiles: TenantProfiles
    ) -> AsyncIterator[Authenticate]:
        cfg = settings.auth.jwt
        if not cfg.issuer:
            yield Authenticate(
                uow, clock, cache_ttl_ms=settings.auth.cache_ttl_ms, profiles=profiles
            )
            return
        client = outbound_client(
            [cfg.jwks_url or cfg.issuer], httpx.Timeout(5.0), "SBA_AUTH__JWT__ISSUER / JWKS_URL"
        )
        try:
            verifier = _jwt_verifier(cfg, client)
        except SettingsError:
            await client.aclose()
            raise
        yield Authenticate(
            uow,
            clock,
            cache_ttl_ms=settings.auth.cache_ttl_ms,
            tokens=verifier,
            profiles=profiles,
            claims=ClaimMapping(
                tenants=cfg.tenant_claim,
                role=cfg.role_claim,
                default_role=Role(cfg.default_role),
                role_prefix=cfg.role_prefix,
                scopes=cfg.scope_claim,
            ),
        )
        await client.aclose()


def base_providers() -> list[Provider]:
    return [InfrastructureProvider(), UseCaseProvider(), JobProvider(), WorkspaceProvider()]


def make_container(
    settings: Settings, *extra: Provider, telemetry: Telemetry | None = None
) -> AsyncContainer:
    """``telemetry`` unset: built from the settings (the caller then flushes nothing)."""
    if telemetry is None:
        telemetry = build_telemetry(settings)
    return make_async_container(
        *base_providers(), *extra, context={Settings: settings, Telemetry: telemetry}
    )
