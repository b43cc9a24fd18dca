"""Runs by tenant and creation time, for the usage ledger and token budgets.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_tenant_id_created_at_ms", "runs", ["tenant_id", "created_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_runs_tenant_id_created_at_ms", table_name="runs")
