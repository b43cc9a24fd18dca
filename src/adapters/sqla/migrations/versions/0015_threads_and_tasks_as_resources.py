"""Threads and tasks as resources: a thread's own title, a task's assignee, the indexes their
lists page through, and the usage of runs whose thread was deleted.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sqla.rls import app_role, is_postgres, protect, unprotect

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("threads", sa.Column("title", sa.String(200)))
    op.create_index(
        "ix_threads_tenant_id_created_at_ms_id", "threads", ["tenant_id", "created_at_ms", "id"]
    )
    op.add_column("tasks", sa.Column("assignee", sa.String(200)))
    op.create_index(
        "ix_tasks_tenant_id_created_at_ms_id", "tasks", ["tenant_id", "created_at_ms", "id"]
    )
    op.create_table(
        "deleted_run_usage",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_deleted_run_usage_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "run_id", name="pk_deleted_run_usage"),
    )
    op.create_index(
        "ix_deleted_run_usage_tenant_id_created_at_ms",
        "deleted_run_usage",
        ["tenant_id", "created_at_ms"],
    )
    if is_postgres():
        protect("deleted_run_usage")
        # Usage once counted stays counted: the application may add rows, never change them.
        op.execute(f'REVOKE UPDATE, DELETE ON deleted_run_usage FROM "{app_role()}"')


def downgrade() -> None:
    if is_postgres():
        unprotect("deleted_run_usage")
    op.drop_index("ix_deleted_run_usage_tenant_id_created_at_ms", table_name="deleted_run_usage")
    op.drop_table("deleted_run_usage")
    op.drop_index("ix_tasks_tenant_id_created_at_ms_id", table_name="tasks")
    op.drop_index("ix_threads_tenant_id_created_at_ms_id", table_name="threads")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("assignee")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("title")
