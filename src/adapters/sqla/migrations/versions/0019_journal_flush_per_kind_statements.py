"""The journal's flush as a statement per kind of write, each only when the batch has it
(Postgres only).

``sba_journal_flush`` (migrations 0016 and 0018) wrote a batch in one statement of data-modifying
CTEs: the endings, the starts and their threads, the messages. Measured on the Postgres backend
(``perf``, ``auto_explain``):

- A batch of starts alone still ran the endings' ``UPDATE`` over an empty array. Planned for the
  call (before the tables have statistics), that ``UPDATE`` read the tenant's runs by the tenant
  alone and filtered them: its cost grew with every run the tenant had.
- Every call initialised the whole plan (three inserts, an update, their sorts and joins)
  whatever the batch held, and the check that picks the planning mode read ``pg_class`` in full.

From this revision the starts (with their threads, so that a run and its new thread still go in
together and the foreign key between them is checked once both are there), the endings and the
messages are three statements, each run only when the batch has rows for it, and the check reads
the three tables' rows by key. Starts now go before endings: a batch that holds both the start
and the end of a run applies both (in one statement the ending could not see the run the start
inserted, so the end was taken for one that had ended already). Everything else is as in 0018:
the same results, the same errors, the same planning mode.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

from adapters.sqla.rls import is_postgres

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"sba_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Until the tables have been analyzed each statement is planned for its values (a generic plan
# made while a table is nearly empty would read it in full once it has grown); then the plans
# are kept, and made again after each ANALYZE (migration 0018). The writes; the audit part
# that follows them is 0016's, taken from it (``_body``).
_WRITES = """
#variable_conflict use_column
DECLARE
    ended_ids text[] := '{}';
    started_ids text[] := '{}';
    last int;
BEGIN
    IF p_role IS NOT NULL THEN
        PERFORM set_config('role', p_role, true);
    END IF;
    PERFORM set_config('app.tenant_id', p_tenant, true);
    IF (SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass) <= 0
       OR (SELECT reltuples FROM pg_class WHERE oid = 'runs'::regclass) <= 0
       OR (SELECT reltuples FROM pg_class WHERE oid = 'threads'::regclass) <= 0 THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    ELSE
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;

    -- Starts insert runs whose ids are free, and their threads, in one statement: the foreign
    -- key from a run to its new thread is checked when the statement ends.
    IF cardinality(s_id) > 0 THEN
        WITH started AS (
            INSERT INTO runs (tenant_id, id, thread_id, agent, status, input_tokens, output_tokens,
                              created_at_ms, model)
            SELECT p_tenant, s.id, s.thread_id, s.agent, s.status, 0, 0, s.at, ''
            FROM unnest(s_id, s_thread, s_agent, s_status, s_at)
                 AS s(id, thread_id, agent, status, at)
            ON CONFLICT DO NOTHING
            RETURNING id, thread_id, created_at_ms
        ), threads_added AS (
            INSERT INTO threads (tenant_id, id, created_at_ms)
            SELECT DISTINCT ON (thread_id) p_tenant, thread_id, created_at_ms
            FROM started ORDER BY thread_id, created_at_ms
            ON CONFLICT DO NOTHING
        )
        SELECT coalesce(array_agg(id), '{}') INTO started_ids FROM started;
    END IF;

    -- Endings apply only to runs still pending or running (the first ending stands).
    IF cardinality(e_id) > 0 THEN
        WITH ended AS (
            UPDATE runs SET status = e.status, input_tokens = e.input_tokens,
                   output_tokens = e.output_tokens, error_code = e.error_code,
                   error_message = e.error_message, finished_at_ms = e.finished_at_ms,
                   model = e.model
            FROM unnest(e_id, e_status, e_input, e_output, e_code, e_message, e_finished, e_model)
                 AS e(id, status, input_tokens, output_tokens, error_code, error_message,
                      finished_at_ms, model)
            WHERE runs.tenant_id = p_tenant AND runs.id = ANY(e_id) AND runs.id = e.id
              AND runs.status IN ('pending', 'running')
            RETURNING runs.id
        )
        SELECT coalesce(array_agg(id), '{}') INTO ended_ids FROM ended;
    END IF;

    -- Messages are written for the records that applied, skipping those the thread holds
    -- already (clients resend their history), at the positions after the thread's last, in
    -- the order given. Look-ups also name their keys as a whole (= ANY), so that a plan may
    -- read them by index rather than read all of the tenant's rows and join them.
    IF cardinality(m_id) > 0 THEN
        INSERT INTO messages (tenant_id, thread_id, id, position, role, content,
                              created_at_ms, tool_calls, tool_call_id)
        SELECT p_tenant, f.thread_id, f.id,
               coalesce((SELECT max(m.position) FROM messages m
                         WHERE m.tenant_id = p_tenant AND m.thread_id = f.thread_id), -1)
               + row_number() OVER (PARTITION BY f.thread_id ORDER BY f.ord),
               f.role, f.content, f.created_at_ms, f.tool_calls, f.tool_call_id
        FROM (
            SELECT DISTINCT ON (i.thread_id, i.id) i.*
            FROM unnest(m_run, m_thread, m_id, m_role, m_content, m_at, m_tool_calls,
                        m_tool_call_id)
                 WITH ORDINALITY AS i(run_id, thread_id, id, role, content, created_at_ms,
                                      tool_calls, tool_call_id, ord)
            WHERE (i.run_id = ANY(started_ids) OR i.run_id = ANY(ended_ids))
              AND NOT EXISTS (
                  SELECT 1 FROM messages m
                  WHERE m.tenant_id = p_tenant AND m.thread_id = ANY(m_thread) AND m.id = ANY(m_id)
                    AND m.thread_id = i.thread_id AND m.id = i.id
              )
            ORDER BY i.thread_id, i.id, i.ord
        ) f;
    END IF;

"""


# Where the audit part of the flush begins: the careful way, or the head checked and moved.
_AUDIT_START = "    IF p_head_seq IS NULL THEN\n"


def _body() -> str:
    """The writes of this revision, then the audit part of 0016's flush, unchanged."""
    body = _migration("0016_journal_flush_function.py")._BODY
    if body.count(_AUDIT_START) != 1:
        raise RuntimeError("migration 0016's flush is not the one 0019 was written against")
    return _WRITES + body[body.index(_AUDIT_START) :]


def upgrade() -> None:
    if is_postgres():
        op.execute(_migration("0018_journal_flush_generic_plans.py")._create(_body()))


def downgrade() -> None:
    if is_postgres():
        m = _migration("0018_journal_flush_generic_plans.py")
        op.execute(m._create(m._flush_0016()._BODY.replace(m._CUSTOM, m._CUSTOM_THEN_GENERIC)))
