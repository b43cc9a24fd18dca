"""The audit trail: per-tenant hash-chained entries and their heads.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sqla.rls import app_role, is_postgres, protect, unprotect

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_audit_entries_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_audit_entries"),
    )
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_audit_heads_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_heads"),
    )
    if is_postgres():
        protect("audit_entries")
        protect("audit_heads")
        # Append-only for the application: it may add entries, never change or remove one.
        op.execute(f'REVOKE UPDATE, DELETE ON audit_entries FROM "{app_role()}"')
        op.execute(f'REVOKE DELETE ON audit_heads FROM "{app_role()}"')


def downgrade() -> None:
    if is_postgres():
        unprotect("audit_heads")
        unprotect("audit_entries")
    op.drop_table("audit_heads")
    op.drop_table("audit_entries")
