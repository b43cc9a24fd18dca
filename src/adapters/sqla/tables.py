"""The schema as SQLAlchemy Core tables. Every tenant-owned table leads with ``tenant_id`` so
indexes, row-level-security policies and partitioning all key on it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(128)

tenants = Table(
    "tenants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("slug", String(63), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    # The text-search configuration of the tenant's knowledge base (Postgres; see 0006).
    Column("kb_language", String(32), nullable=False, server_default="simple"),
    # The operator's settings for the tenant (NULL: the deployment's default); tools and models
    # are space-separated names.
    Column("plan", String(64)),
    Column("allowed_tools", Text),
    Column("allowed_models", Text),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_digest", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger),
    Column("last_used_at_ms", BigInteger),
    # Space-separated scope names; NULL: whatever the key's role allows.
    Column("scopes", String(200)),
    Index(None, "tenant_id"),
)

threads = Table(
    "threads",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("id", ID, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    # The name a person gave the thread (0015); NULL: derived from its first user message.
    Column("title", String(200)),
    PrimaryKeyConstraint("tenant_id", "id"),
    # Threads are listed newest first, a page at a time (0015).
    Index(None, "tenant_id", "created_at_ms", "id"),
)

messages = Table(
    "messages",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("thread_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    # JSON list of {"id", "name", "arguments"} for an assistant message that called tools.
    Column("tool_calls", Text),
    Column("tool_call_id", ID),
    PrimaryKeyConstraint("tenant_id", "thread_id", "id"),
    ForeignKeyConstraint(
        ["tenant_id", "thread_id"], ["threads.tenant_id", "threads.id"], ondelete="CASCADE"
    ),
    Index(None, "tenant_id", "thread_id", "position", unique=True),
)

runs = Table(
    "runs",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("thread_id", ID, nullable=False),
    Column("agent", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("finished_at_ms", BigInteger),
    # The model (its name in the chain) that answered the run's last model call (0012).
    Column("model", String(100), nullable=False, server_default=""),
    PrimaryKeyConstraint("tenant_id", "id"),
    ForeignKeyConstraint(
        ["tenant_id", "thread_id"], ["threads.tenant_id", "threads.id"], ondelete="CASCADE"
    ),
    Index(None, "tenant_id", "thread_id"),
    # The usage ledger sums a tenant's runs since a time (0011).
    Index(None, "tenant_id", "created_at_ms"),
)

kb_documents = Table(
    "kb_documents",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("id", ID, nullable=False),
    Column("title", String(300), nullable=False),
    Column("content_type", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    # Indexing (0007): ``digest`` names the stored version, ``indexed_digest`` the version the
    # chunks were made from; ``index_generation`` counts committed indexings.
    Column("digest", String(64), nullable=False, server_default=""),
    Column("index_state", String(16), nullable=False, server_default="indexed"),
    Column("indexed_digest", String(64)),
    Column("index_chunks", Integer, nullable=False, server_default="0"),
    Column("index_generation", Integer, nullable=False, server_default="0"),
    Column("index_error", Text),
    Column("index_updated_at_ms", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("tenant_id", "id"),
)

kb_chunks = Table(
    "kb_chunks",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("document_id", ID, nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text, nullable=False),
    # The chunk's embedding (unit float32, packed) and the model that made it; NULL until the
    # indexing job has embedded it, and gone with the chunk when the document is re-indexed.
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200)),
    # On Postgres kb_chunks also has ``title``, ``language`` and the generated ``tsv`` (with
    # its GIN index), made by migration 0006 and not modelled here: they exist on Postgres only.
    PrimaryKeyConstraint("tenant_id", "document_id", "ordinal"),
    ForeignKeyConstraint(
        ["tenant_id", "document_id"],
        ["kb_documents.tenant_id", "kb_documents.id"],
        ondelete="CASCADE",
    ),
)

tasks = Table(
    "tasks",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("id", ID, nullable=False),
    Column("title", String(300), nullable=False),
    Column("notes", Text, nullable=False),
    Column("due", String(32)),
    Column("status", String(16), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    # Who the task is handed to (0015); NULL: nobody yet.
    Column("assignee", String(200)),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(None, "tenant_id", "created_at_ms", "id"),
)

# The usage of runs whose thread was deleted (0015): the ledger counts it still, so deleting a
# conversation never gives tokens back to a budget nor takes them out of the usage report.
deleted_run_usage = Table(
    "deleted_run_usage",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", ID, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("model", String(100), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "run_id"),
    Index(None, "tenant_id", "created_at_ms"),
)

interrupts = Table(
    "interrupts",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("id", ID, nullable=False),
    Column("thread_id", ID, nullable=False),
    Column("run_id", ID, nullable=False),
    Column("tool_call_id", ID, nullable=False),
    Column("tool_name", String(128), nullable=False),
    Column("arguments", Text, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(None, "tenant_id", "thread_id", "status"),
)

render_jobs = Table(
    "render_jobs",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("id", ID, nullable=False),
    Column("template", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("formats", String(64), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("artifacts", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)

# The audit trail (0009): per tenant, a hash chain of entries, and its head (last seq and
# hash) kept apart so that removing entries from the end is caught too. On Postgres the
# application role may read and append entries, never change or remove them.
audit_entries = Table(
    "audit_entries",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Jobs that failed on every attempt (0007). Operational, cross-tenant, read and written on the
# admin path only: the application role has no privileges on it.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("tenant_id", ID, nullable=False),
    Column("job_key", Text, nullable=False),
    Column("job", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("failed_at_ms", BigInteger, nullable=False),
    Index(None, "failed_at_ms"),
)

# Cross-tenant (admin) transactions, one row each, written before the work. Not tenant-owned:
# the application role has no privileges on it at all.
admin_log = Table(
    "admin_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(200), nullable=False),
)

# Tables whose rows belong to one tenant: each carries row-level security on Postgres.
TENANT_TABLES = (
    "api_keys",
    "threads",
    "messages",
    "runs",
    "kb_documents",
    "kb_chunks",
    "tasks",
    "interrupts",
    "render_jobs",
    "audit_entries",
    "audit_heads",
    "deleted_run_usage",
)
