"""Settings: one frozen msgspec tree, read from ``SBA_*`` environment variables (nested with
``__``) over an optional TOML file (``SBA_CONFIG_FILE``). A value of the wrong type, or a key
that does not exist, stops start-up with a message naming the variable."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

ENV_PREFIX = "SBA_"
CONFIG_FILE_VAR = "SBA_CONFIG_FILE"
# Read by `sba chat`, a client: not a setting of the server, so a shell holding it still serves.
CLIENT_KEY_VAR = "SBA_API_KEY"


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class HttpSettings(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    # Idle SSE streams get a comment line this often so proxies keep them open.
    heartbeat_s: float = 15.0
    max_body_bytes: int = 1_048_576
    # One line per request on logger sba.access, in the log format, written off the request's
    # path by a thread of its own.
    access_log: bool = True
    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example.com"]; empty:
    # none ("*" is refused: a bearer-token API names its front ends).
    cors_origins: list[str] = []
    # Strict-Transport-Security on every response (0: not sent, e.g. plain-HTTP development
    # behind no TLS at all; browsers ignore it over plain HTTP anyway).
    hsts_max_age_s: int = 63_072_000
    # Server processes sharing the port (`sba serve --workers N`); more than one needs
    # SBA_REDIS_URL, so that they share limits, run caps, run streams and idempotency keys.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Run starts (authenticated, recording the run) in progress at once per process; more wait
    # their turn, tenants taking turns, and one still waiting after start_queue_timeout_s is
    # answered 503 server_busy with Retry-After.
    start_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    start_queue_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class PlanSettings(_Section, frozen=True):
    """A named plan: each field left unset follows the deployment's ``rate_limit`` values."""

    per_minute: int | None = None
    routes: dict[str, int] | None = None
    principal_per_minute: int | None = None
    principal_routes: dict[str, int] | None = None
    concurrent_runs: int | None = None
    token_budget: int | None = None
    token_budget_soft: int | None = None
    budget_period: Literal["day", "month"] | None = None
    concurrent_runs_per_principal: int | None = None


class RateLimitSettings(_Section, frozen=True):
    """Requests per minute (sliding window with a burst), by route class: ``runs`` (starting a
    run), ``read`` (GET), ``write`` (other changes). Zero turns a limit off."""

    # Per tenant, every route class not named in ``routes``.
    default_per_minute: int = 600
    routes: dict[str, int] = {}
    # Per principal (API key or signed-in user) within its tenant.
    principal_per_minute: int = 0
    principal_routes: dict[str, int] = {}
    # Per client address, before authentication.
    address_per_minute: int = 6_000
    # Failed authentications (a wrong, unknown, expired or revoked key or token) per client
    # address and per API-key prefix; past them, that address or key is refused (429) until
    # its counter frees up, whatever it sends (ADR 0040).
    auth_failures_per_minute: int = 10
    auth_failures_per_key_per_minute: int = 10
    # The client address is the peer's, or the last entry of this header when a proxy of
    # yours sets it (for example X-Forwarded-For or CF-Connecting-IP).
    client_address_header: str = ""
    # Share of the per-minute limit that may arrive at once.
    burst_ratio: float = 0.2
    # When the limiter's store (Redis) cannot be reached: admit ("open") or answer 503.
    fail_mode: Literal["open", "closed"] = "open"
    # Runs executing at once per tenant and per principal (0: no cap); a crashed instance's
    # places come back after the lease.
    concurrent_runs: int = 256
    concurrent_runs_per_principal: int = 0
    run_lease_s: float = 30.0
    # Named plans and which tenant (by slug) is on which.
    plans: dict[str, PlanSettings] = {}
    tenants: dict[str, str] = {}
    # Tokens (input plus output) a tenant's runs may use per period: past the soft limit runs
    # carry a warning, past the hard one new runs are refused until the period ends. 0: none.
    token_budget: int = 0
    token_budget_soft: int = 0
    budget_period: Literal["day", "month"] = "month"
    # Each process reads a tenant's usage at most this often (0: before every run).
    budget_cache_ms: int = 2_000


class RedisSettings(_Section, frozen=True):
    """Redis, Upstash or ElastiCache (``SBA_REDIS_URL``, ``rediss://`` for TLS)."""

    # Put before every key, so deployments can share a Redis; no braces.
    key_prefix: str = "sba:"
    # Redis Cluster (ElastiCache cluster mode enabled): keys used together share a hash tag.
    cluster: bool = False
    # The AUTH password or token, from a mounted secret (wins over one in the URL).
    password_file: str | None = None
    tls_ca_file: str | None = None
    tls_verify: bool = True
    timeout_s: float = 1.0
    connect_timeout_s: float = 1.0
    max_connections: int = 256
    # Calls beyond max_connections wait their turn this long, then fail with 503 redis_busy.
    pool_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # After Redis fails, calls fail fast this long before trying again.
    retry_after_failure_s: float = 1.0


class IdempotencySettings(_Section, frozen=True):
    # How long a stored response answers a repeated Idempotency-Key.
    retention_s: float = 86_400.0
    # A request still in flight after this long (its instance died) no longer blocks retries.
    lock_s: float = 60.0
    # Larger responses are not stored (the key is released instead).
    max_response_bytes: int = 1_048_576


class CacheSettings(_Section, frozen=True):
    # The in-memory cache's bound; Redis is bounded by its own maxmemory policy.
    max_entries: int = 10_000


class JwtSettings(_Section, frozen=True):
    """Bearer JWTs from an identity provider; off while ``issuer`` is empty. The defaults fit
    Supabase Auth: issuer ``https://<ref>.supabase.co/auth/v1``, keys at
    ``<issuer>/.well-known/jwks.json``, audience ``authenticated``."""

    issuer: str = ""
    audience: str = "authenticated"
    # Empty: <issuer>/.well-known/jwks.json.
    jwks_url: str = ""
    algorithms: tuple[str, ...] = ("ES256", "RS256")
    # Supabase's legacy shared secret; HS256 is accepted only when it is set (and listed).
    hs256_secret: str | None = None
    hs256_secret_file: str | None = None
    leeway_s: float = 30.0
    # A token naming an unknown key refetches the key set at most this often.
    jwks_refresh_s: float = 30.0
    # Where the claims name the person's tenants (by id): one id, a list of ids, or a map from
    # id to role. X-Tenant-ID chooses among several. A dotted path; a claim whose own name has
    # dots (Auth0's "https://example.com/tenants") is matched whole.
    tenant_claim: str = "app_metadata.tenant_id"
    # The role (admin, member, readonly) for tenants the tenant claim gives none: a name, or a
    # list of which the most capable of ours counts (Keycloak's resource_access.<client>.roles).
    role_claim: str = "app_metadata.sba_role"
    # Stripped from role names before they are read: "sba-" makes "sba-admin" mean admin.
    role_prefix: str = ""
    # Where the token's OAuth scopes are ("scope" for Auth0 and Keycloak). Empty: tokens are
    # limited by role only; set: a token may do only the work its scopes of ours name (runs,
    # kb:read, kb:write, renders, usage:read).
    scope_claim: str = ""
    default_role: Literal["admin", "member", "readonly"] = "member"


class AuthSettings(_Section, frozen=True):
    # A verified credential is remembered this long: a suspension or revocation made through
    # another instance takes effect within it (through this one: at once).
    cache_ttl_ms: int = 5_000
    jwt: JwtSettings = JwtSettings()
    # The operator's bearer token for the admin API (/admin/v1); unset: the API is off (404).
    # ``admin_token_file`` (a mounted secret) wins.
    admin_token: str | None = None
    admin_token_file: str | None = None


class ProviderSettings(_Section, frozen=True):
    """One model in the chain. ``api_key_file`` (a mounted secret) wins over ``api_key``."""

    name: str
    kind: Literal["openai", "anthropic", "offline"]
    model: str = ""
    base_url: str = ""
    api_key: str | None = None
    api_key_file: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 3
    max_tokens: int = 1024


class TenantLlmSettings(_Section, frozen=True):
    """A tenant's model flags: which chain entries (by name, in order) it uses, and whether its
    answers may be cached. Unset fields follow the deployment's settings."""

    chain: tuple[str, ...] | None = None
    cache: bool | None = None
    # The agent's instructions to real models, replacing the deployment's, and the language
    # answers are given in ("": the person's own).
    system_prompt: str | None = None
    language: str | None = None


class LlmSettings(_Section, frozen=True):
    # The models to try in order (JSON list in SBA_LLM__CHAIN); empty means the offline model.
    chain: tuple[ProviderSettings, ...] = ()
    # Identical requests within this many seconds are answered from the cache (0: off).
    cache_ttl_s: float = 0.0
    breaker_threshold: int = 3
    breaker_cool_down_s: float = 30.0
    # Per-tenant flags by slug (JSON in SBA_LLM__TENANTS).
    tenants: dict[str, TenantLlmSettings] = {}
    loadtest: bool = False
    offline_token_delay_ms: float = 0.0
    # The instructions every real model gets first (unset: the built-in ones: search the
    # knowledge base, cite sources by number, say when nothing was found), and the language
    # answers are given in (empty: the language the person writes in). Per tenant in tenants.
    system_prompt: str | None = None
    system_prompt_file: str | None = None
    language: str = ""


class RunSettings(_Section, frozen=True):
    max_events_per_run: int = 10_000
    retention_s: float = 60.0
    max_finished_runs: int = 4_096
    # On shutdown, runs still executing get this long to finish before they are cancelled.
    shutdown_grace_s: float = 10.0
    # Model turns per run before it fails with step_limit.
    max_steps: int = 8
    # A run's instance holds a lease on it, renewed every third of this term; when an instance
    # dies its leases lapse and another instance ends its runs with instance_lost, looking
    # for lapsed leases every sweep_s (0038).
    lease_s: Annotated[float, msgspec.Meta(ge=1.0)] = 10.0
    sweep_s: Annotated[float, msgspec.Meta(gt=0.0)] = 2.0


class ToolSettings(_Section, frozen=True):
    # Tools every tenant may use ("*": all), and per-tenant lists (by slug) that replace it.
    allow: tuple[str, ...] = ("*",)
    tenants: dict[str, tuple[str, ...]] = {}
    timeout_s: float = 10.0
    # Tools that wait for a person's approval (an AG-UI interrupt) before they run, and
    # per-tenant lists that replace it; how long an approval request stays open.
    approval: tuple[str, ...] = ()
    approval_tenants: dict[str, tuple[str, ...]] = {}
    approval_ttl_s: float = 3600.0


class EmbeddingSettings(_Section, frozen=True):
    """An OpenAI-compatible embeddings endpoint; set ``model`` to turn on hybrid search.
    ``api_key_file`` (a mounted secret) wins over ``api_key``; ``dimensions`` shortens the
    vectors of models that can (OpenAI's text-embedding-3)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = ""
    api_key: str | None = None
    api_key_file: str | None = None
    dimensions: int | None = None
    timeout_s: float = 30.0
    max_attempts: int = 3
    # Chunks per embeddings request while indexing.
    batch_size: int = 64
    # Chunks each ranking (lexical, semantic) contributes before they are fused.
    pool: int = 40


class KnowledgeSettings(_Section, frozen=True):
    max_document_bytes: int = 512 * 1024
    chunk_chars: int = 800
    chunk_overlap: int = 120
    embeddings: EmbeddingSettings = EmbeddingSettings()


class WorkerSettings(_Section, frozen=True):
    """Background jobs (``SBA_BROKER_URL``; unset: they run inside ``sba serve``)."""

    # The Redis stream jobs travel on, named under SBA_REDIS__KEY_PREFIX like every other key
    # (``<prefix><queue>``, its consumer group ``<prefix><queue>:workers``): deployments that
    # share a Redis never take each other's jobs.
    queue: str = "jobs"
    # Jobs one worker process runs at once.
    concurrency: int = 32
    # Attempts per job before it goes to the dead-letter store, and the backoff between them
    # (exponential from base to cap, with jitter).
    max_attempts: int = 5
    retry_base_ms: int = 500
    retry_cap_ms: int = 60_000
    # A job taken by a worker that died is given to another after it has been idle this long.
    redeliver_after_s: float = 60.0
    # On SIGTERM a worker finishes its running jobs for up to this long (the rest are
    # redelivered to another worker).
    shutdown_grace_s: float = 30.0


class ContentSourceSettings(_Section, frozen=True):
    """A tenant's content source: a folder of Markdown files, or a BaseHub repository."""

    kind: Literal["folder", "basehub"]
    path: str = ""
    token: str | None = None
    token_file: str | None = None
    endpoint: str = "https://api.basehub.com/graphql"
    ref: str | None = None
    draft: bool = False
    # The list block holding the documents, and their rich-text field.
    collection: str = "documents"
    body_field: str = "body"
    webhook_secret: str | None = None
    webhook_secret_file: str | None = None
    timeout_s: float = 10.0
    max_attempts: int = 3


class ContentSettings(_Section, frozen=True):
    # Content sources by tenant slug (JSON in SBA_CONTENT__TENANTS).
    tenants: dict[str, ContentSourceSettings] = {}
    # How long fetched content and cached search results are kept.
    cache_ttl_s: float = 300.0
    # Accepted webhook bodies are remembered this long; a repeat is refused as a replay.
    replay_window_s: float = 86_400.0


class S3Settings(_Section, frozen=True):
    """An S3-compatible bucket for artifacts (AWS S3, Cloudflare R2, MinIO, Supabase Storage's
    S3 endpoint), path-style, SigV4-signed. ``secret_key_file`` wins over ``secret_key``."""

    endpoint: str = "https://s3.amazonaws.com"
    bucket: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str | None = None
    secret_key_file: str | None = None
    session_token: str | None = None
    prefix: str = ""
    timeout_s: float = 30.0
    max_attempts: int = 3


class RenderSettings(_Section, frozen=True):
    # Where artifacts go: "local" (a folder: blob_path, empty: <data_dir>/artifacts) or "s3".
    blob_store: str = "local"
    blob_path: str = ""
    s3: S3Settings = S3Settings()
    # Signs download links; unset, a random secret is made at start (links then work only on
    # this process until it restarts).
    link_secret: str | None = None
    link_secret_file: str | None = None
    link_ttl_s: int = 900
    # How long the render_document tool waits for the render before answering "queued".
    tool_wait_s: float = 8.0


class ModelPrice(_Section, frozen=True):
    input_per_million: float
    output_per_million: float


class BillingSettings(_Section, frozen=True):
    """Usage metering. ``none`` (the default) keeps the local ledger only (``/v1/usage``);
    ``stripe`` also reports each finished run's tokens as a Stripe meter event, for the
    tenants (by slug) listed in ``customers`` with their Stripe customer id."""

    provider: Literal["none", "stripe"] = "none"
    api_key: str | None = None
    api_key_file: str | None = None
    event_name: str = "sba_tokens"
    base_url: str = "https://api.stripe.com"
    api_version: str | None = None
    customers: dict[str, str] = {}
    # What tokens cost, per model of the chain by name: {"gpt-4o-mini": {"input_per_million":
    # 0.15, "output_per_million": 0.6}}; shown by /v1/usage in ``currency``.
    prices: dict[str, ModelPrice] = {}
    currency: str = "USD"


class RuntimeSettings(_Section, frozen=True):
    # Python's cyclic GC: objects alive at start-up are frozen out of its scans, and young
    # collections run every this many allocations (CPython's default of 700 makes the full
    # collections that stall streams far more frequent).
    gc_gen0_threshold: int = 50_000
    gc_gen1_threshold: int = 20
    gc_gen2_threshold: int = 100


class PostgresSettings(_Section, frozen=True):
    """Postgres (and Supabase). Tenant transactions drop to ``app_role`` (empty: stay as the
    login role, which must then be unprivileged); ``pooler`` is for a transaction-mode pooler
    such as Supabase's on port 6543 (no prepared statements survive a statement)."""

    app_role: str = "sba_app"
    pooler: bool = False
    pool_size: int = 10
    max_overflow: int = 10
    # Connections of the run journal's own pool (asyncpg): tenants flush beside each other on
    # them, each tenant's records grouped into one transaction at a time (0034).
    journal_connections: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # Connections of the knowledge search's own pool (asyncpg): a search is one call (0046).
    search_connections: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4


class LogSettings(_Section, frozen=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = True
    # Tenants (by slug) whose prompts and answers are logged (logger sba.llm.content), to debug
    # their conversations; no other tenant's message contents are ever logged.
    content_tenants: list[str] = []


class TelemetrySettings(_Section, frozen=True):
    """Traces (OpenTelemetry) and metrics (Prometheus, at ``/metrics``)."""

    # none: nothing recorded (a caller's traceparent still reaches the jobs it causes);
    # console: one JSON span per line on stdout; otlp: OTLP/HTTP (protobuf) to otlp_endpoint.
    traces: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # Extra headers for the collector, e.g. {"x-honeycomb-team": "…"}; or from a JSON file.
    otlp_headers: dict[str, str] = {}
    otlp_headers_file: str | None = None
    # Share of new traces recorded; a trace begun upstream follows its caller's decision.
    sample_ratio: float = 1.0
    service_name: str = "sba"
    # Spans for each SQL statement and Redis command as well (many per run).
    trace_statements: bool = True
    metrics: bool = True
    # /metrics on the API port answers only "Authorization: Bearer <token>" (unset: 404 there,
    # for its series name tenants). Or it is served on a listener of its own, metrics_host and
    # metrics_port (0: none), for a scraper that reaches the host or pod directly.
    metrics_token: str | None = None
    metrics_token_file: str | None = None
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # `sba worker` serves its own /metrics on this port (0: none); scrape each process.
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"


class Settings(_Section, frozen=True):
    data_dir: str = ".sba"
    database_url: str | None = None
    # Migrations and the audited cross-tenant path connect here (the schema owner, or a role
    # with BYPASSRLS); unset: the same URL as database_url.
    database_admin_url: str | None = None
    seed_demo: bool = True
    # Unset: the rate limiter, cache, run event log and idempotency keys live in this process.
    redis_url: str | None = None
    redis: RedisSettings = RedisSettings()
    # Unset: background jobs run in this process (taskiq's in-memory broker).
    broker_url: str | None = None
    worker: WorkerSettings = WorkerSettings()
    content: ContentSettings = ContentSettings()
    render: RenderSettings = RenderSettings()
    billing: BillingSettings = BillingSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    cache: CacheSettings = CacheSettings()
    postgres: PostgresSettings = PostgresSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    llm: LlmSettings = LlmSettings()
    runs: RunSettings = RunSettings()
    kb: KnowledgeSettings = KnowledgeSettings()
    tools: ToolSettings = ToolSettings()
    log: LogSettings = LogSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    runtime: RuntimeSettings = RuntimeSettings()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = Path(self.data_dir).expanduser().resolve() / "sba.db"
        return f"sqlite+aiosqlite:///{path}"

    @property
    def effective_admin_url(self) -> str:
        return self.database_admin_url or self.effective_database_url

    @property
    def is_embedded_database(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def job_stream(self) -> str:
        """The Redis stream of background jobs: the queue's name under the key prefix."""
        return f"{self.redis.key_prefix}{self.worker.queue}"


class SettingsError(Exception):
    """Raised with a message naming the offending key; start-up prints it and exits."""


def _env_name(path: str) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in path.split("."))


def _nest(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_FILE_VAR, CLIENT_KEY_VAR):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise SettingsError(f"{name}: empty segment in the variable name")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{name}: {part} is a value, not a section")
            node = child
        node[parts[-1]] = _value(name, value)
    return tree


def _value(name: str, raw: str) -> Any:
    """Lists and tables come as JSON (``SBA_TOOLS__ALLOW='["kb_search"]'``); scalars as text."""
    if raw[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{name}: not valid JSON: {exc}") from exc
    return raw


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _key_of(error: msgspec.ValidationError) -> str:
    # msgspec reports ``... - at `$.http.port``` or names an unknown field ``Object contains
    # unknown field `x` - at `$.http```.
    text = str(error)
    path = ""
    if "at `$" in text:
        path = text.rsplit("at `$", 1)[1].rstrip("`").lstrip(".")
    if "unknown field `" in text:
        field = text.split("unknown field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{field}" if path else field
    return path


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config_file = env.get(CONFIG_FILE_VAR)
    if config_file:
        try:
            raw = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise SettingsError(f"{CONFIG_FILE_VAR}: cannot read {config_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(
                f"{CONFIG_FILE_VAR}: {config_file} is not valid TOML: {exc}"
            ) from exc
    raw = _merge(raw, _nest(env))
    try:
        # strict=False lets "8000" become an int and "true" a bool, as env values must.
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        key = _key_of(exc)
        name = _env_name(key) if key else "settings"
        raise SettingsError(f"{name} (settings key {key or '?'}): {exc}") from exc
    _check(settings)
    return settings


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")


def _check(settings: Settings) -> None:
    """Rules across fields that the types alone cannot state."""
    for origin in settings.http.cors_origins:
        if not _ORIGIN.match(origin):
            raise SettingsError(
                f"SBA_HTTP__CORS_ORIGINS: {origin!r} is not an origin like "
                "https://app.example.com (no wildcard, no path)"
            )
    if settings.http.hsts_max_age_s < 0:
        raise SettingsError("SBA_HTTP__HSTS_MAX_AGE_S: must be 0 or more")
    t = settings.telemetry
    if not 0.0 <= t.sample_ratio <= 1.0:
        raise SettingsError("SBA_TELEMETRY__SAMPLE_RATIO: must be between 0 and 1")
    if t.traces == "otlp" and not re.match(r"^https?://[^\s/]+", t.otlp_endpoint):
        raise SettingsError(
            f"SBA_TELEMETRY__OTLP_ENDPOINT: {t.otlp_endpoint!r} is not an http(s) URL"
        )
    if not 0 <= t.worker_metrics_port <= 65535:
        raise SettingsError("SBA_TELEMETRY__WORKER_METRICS_PORT: not a port number")
    if not 0 <= t.metrics_port <= 65535:
        raise SettingsError("SBA_TELEMETRY__METRICS_PORT: not a port number")
    queue, prefix = settings.worker.queue, settings.redis.key_prefix
    if not queue or "{" in queue or "}" in queue:
        raise SettingsError("SBA_WORKER__QUEUE: a non-empty name without braces")
    if prefix and queue.startswith(prefix):
        # Before the prefix covered the queue, the default was "sba:jobs": a queue still named
        # with its prefix would now live at "<prefix><prefix>…", away from its waiting jobs.
        raise SettingsError(
            f"SBA_WORKER__QUEUE: {queue!r} repeats the key prefix {prefix!r}; the queue is "
            f"named under SBA_REDIS__KEY_PREFIX, so write {queue[len(prefix) :]!r}"
        )
