"""Knowledge base: documents, chunks, and (on SQLite) an FTS5 index over the chunks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "kb_documents",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_kb_documents"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_kb_documents_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "kb_chunks",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("document_id", ID, nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "document_id", "ordinal", name="pk_kb_chunks"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "document_id"],
            ["kb_documents.tenant_id", "kb_documents.id"],
            name="fk_kb_chunks_tenant_id_kb_documents",
            ondelete="CASCADE",
        ),
    )
    if op.get_bind().dialect.name == "sqlite":
        # Porter stemming so that "invoice" finds "invoices"; tenant and document ids ride
        # along unindexed so every query filters by tenant inside the index.
        op.execute(
            "CREATE VIRTUAL TABLE kb_chunks_fts USING fts5("
            "title, text, tenant_id UNINDEXED, document_id UNINDEXED, ordinal UNINDEXED, "
            "tokenize = 'porter unicode61')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS kb_chunks_fts")
    op.drop_table("kb_chunks")
    op.drop_table("kb_documents")
