"""Indexing status on knowledge-base documents; render jobs; dead letters.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sqla.rls import is_postgres, protect, unprotect

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kb_documents") as batch:
        batch.add_column(sa.Column("digest", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("index_state", sa.String(16), nullable=False, server_default="indexed")
        )
        batch.add_column(sa.Column("indexed_digest", sa.String(64)))
        batch.add_column(
            sa.Column("index_chunks", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("index_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("index_error", sa.Text()))
        batch.add_column(
            sa.Column("index_updated_at_ms", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "render_jobs",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("formats", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("artifacts", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_render_jobs_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_render_jobs"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("job_key", sa.Text(), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_failed_at_ms", "dead_letters", ["failed_at_ms"])
    if is_postgres():
        protect("render_jobs")
        # Dead letters carry tenant ids but belong to operators: row-level security forced
        # with no policy and no grant, so only the admin path (which bypasses it) sees them.
        op.execute("ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    if is_postgres():
        unprotect("render_jobs")
    op.drop_index("ix_dead_letters_failed_at_ms", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("render_jobs")
    with op.batch_alter_table("kb_documents") as batch:
        for column in (
            "index_updated_at_ms",
            "index_error",
            "index_generation",
            "index_chunks",
            "indexed_digest",
            "index_state",
            "digest",
        ):
            batch.drop_column(column)
