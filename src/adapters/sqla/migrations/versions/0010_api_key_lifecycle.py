"""API keys: expiry and last use.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at_ms", sa.BigInteger()))
    op.add_column("api_keys", sa.Column("last_used_at_ms", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at_ms")
        batch.drop_column("expires_at_ms")
