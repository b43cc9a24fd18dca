"""Tenants: the operator's plan, allowed tools and allowed models (NULL: the deployment's).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("plan", sa.String(64)))
    op.add_column("tenants", sa.Column("allowed_tools", sa.Text()))
    op.add_column("tenants", sa.Column("allowed_models", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("allowed_models")
        batch.drop_column("allowed_tools")
        batch.drop_column("plan")
