"""The journal's flush keeps its plans once the tables have statistics (Postgres only).

``sba_journal_flush`` (migration 0016) had Postgres plan each of its statements for the values
of every call until the tables were first analyzed, and left the choice to Postgres after that.
Postgres's choice was to go on planning most of them per call: it compares a generic plan's
estimate with the custom plans' average, and an array parameter (``unnest`` of the batch) looks
dear in the generic estimate whatever the batch holds. Planning was then about 40 % of the
flush's time in Postgres, for plans that are the same for every call: each statement finds its
rows by key (the tenant and a run, thread or message id).

From this revision, once the tables have statistics, the flush asks for the generic plans: each
backend plans each statement once, and again after an ``ANALYZE`` (autovacuum's, as the tables
grow) invalidates it, so the plans follow the tables' sizes. Before the first statistics it still
plans per call, for the reason 0016 gives (a generic plan made while a table was nearly empty
would be kept as the table grows).

The body is 0016's with that one change, taken from 0016 itself so that the two cannot drift.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

from adapters.sqla.rls import is_postgres

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_CUSTOM = """        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;"""
_CUSTOM_THEN_GENERIC = """        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    ELSE
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;"""


def _flush_0016() -> ModuleType:
    path = Path(__file__).with_name("0016_journal_flush_function.py")
    spec = importlib.util.spec_from_file_location("sba_migration_0016", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create(body: str) -> str:
    m = _flush_0016()
    # CREATE OR REPLACE keeps the function's grants (the application role only).
    return (
        f"CREATE OR REPLACE FUNCTION sba_journal_flush({m._SIGNATURE})\n"
        "RETURNS TABLE (r_kind text, r_id text, r_seq bigint, r_hash text)\n"
        "LANGUAGE plpgsql VOLATILE SECURITY INVOKER\n"
        f"AS $fn${body}$fn$"
    )


def upgrade() -> None:
    if is_postgres():
        body = _flush_0016()._BODY
        if body.count(_CUSTOM) != 1:
            raise RuntimeError("migration 0016's flush is not the one 0018 was written against")
        op.execute(_create(body.replace(_CUSTOM, _CUSTOM_THEN_GENERIC)))


def downgrade() -> None:
    if is_postgres():
        op.execute(_create(_flush_0016()._BODY))
