"""Knowledge-base language per tenant; Postgres full-text search on chunks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sqla.rls import is_postgres

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("kb_language", sa.String(32), nullable=False, server_default="simple")
        )
    if not is_postgres():
        return  # SQLite searches through its FTS5 table (0002)
    op.execute("ALTER TABLE kb_chunks ADD COLUMN title text NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE kb_chunks ADD COLUMN language regconfig NOT NULL DEFAULT 'simple'")
    op.execute(
        "ALTER TABLE kb_chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
        "setweight(to_tsvector(language, title), 'A') || "
        "setweight(to_tsvector(language, text), 'B')) STORED"
    )
    op.execute("CREATE INDEX ix_kb_chunks_tsv ON kb_chunks USING gin (tsv)")


def downgrade() -> None:
    if is_postgres():
        op.execute("DROP INDEX IF EXISTS ix_kb_chunks_tsv")
        for column in ("tsv", "language", "title"):
            op.execute(f"ALTER TABLE kb_chunks DROP COLUMN IF EXISTS {column}")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("kb_language")
