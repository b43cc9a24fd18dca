"""Row-level security on every tenant-owned table (Postgres), and the admin log (both).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sqla.rls import ensure_app_role, is_postgres, protect, unprotect

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen here: later migrations protect the tables they add themselves.
TENANT_TABLES = (
    "api_keys",
    "threads",
    "messages",
    "runs",
    "kb_documents",
    "kb_chunks",
    "tasks",
    "interrupts",
)

KEY_LOOKUP_KEYS = (
    "CREATE POLICY key_lookup ON api_keys FOR SELECT "
    "USING (prefix = current_setting('app.key_prefix', true))"
)
KEY_LOOKUP_TENANTS = (
    "CREATE POLICY key_lookup ON tenants FOR SELECT USING (id IN "
    "(SELECT tenant_id FROM api_keys WHERE prefix = current_setting('app.key_prefix', true)))"
)


def upgrade() -> None:
    op.create_table(
        "admin_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_log"),
    )
    if not is_postgres():
        return
    ensure_app_role()
    protect("tenants", column="id")
    for table in TENANT_TABLES:
        protect(table)
    # Authentication happens before a tenant is known: a transaction carrying a key prefix
    # sees that one key and the tenant owning it, nothing else.
    op.execute(KEY_LOOKUP_KEYS)
    op.execute(KEY_LOOKUP_TENANTS)


def downgrade() -> None:
    if is_postgres():
        op.execute("DROP POLICY IF EXISTS key_lookup ON tenants")
        op.execute("DROP POLICY IF EXISTS key_lookup ON api_keys")
        for table in (*TENANT_TABLES, "tenants"):
            unprotect(table)
    op.drop_table("admin_log")
