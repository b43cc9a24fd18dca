"""Embeddings on knowledge-base chunks (optional hybrid search).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: an ALTER TABLE … ADD COLUMN on both databases, no table rebuild.
    op.add_column("kb_chunks", sa.Column("embedding", sa.LargeBinary()))
    op.add_column("kb_chunks", sa.Column("embedding_model", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("kb_chunks") as batch:
        batch.drop_column("embedding_model")
        batch.drop_column("embedding")
