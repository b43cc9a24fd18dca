"""The run journal's flush as one function call (Postgres only): a flush of a tenant's queued
run starts and ends is one round trip when the journal knows the tenant's audit head.

``sba_journal_flush`` is ``SECURITY INVOKER``: it runs with the caller's rights, drops to the
application role when given one (as the journal's transactions always did) and sets the
transaction's tenant, so row-level security holds every statement in it exactly as before. It
leaves no session state: both settings are transaction-local.

Called with the audit head the journal expects (``p_head_seq``), it is a whole flush in one
statement: the writes, then the audit entries the journal chained from that head, then the head
moved, all in the statement's own transaction. It raises ``SBJ01`` when a record did not apply
as expected (a run id taken, a run ended already or never recorded) and ``SBJ02`` when the head
has moved since (another instance wrote the tenant's trail); the statement's transaction rolls
back and the journal repeats the flush the careful way. Called without a head, it writes the
records inside the caller's transaction and returns which applied and the tenant's head, locked,
for the caller to chain the entries of those that did.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from adapters.sqla.rls import app_role, is_postgres

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_SIGNATURE = """
    p_tenant text, p_role text,
    e_id text[], e_status text[], e_input bigint[], e_output bigint[], e_code text[],
    e_message text[], e_finished bigint[], e_model text[],
    s_id text[], s_thread text[], s_agent text[], s_status text[], s_at bigint[],
    m_run text[], m_thread text[], m_id text[], m_role text[], m_content text[], m_at bigint[],
    m_tool_calls text[], m_tool_call_id text[],
    p_genesis text, p_head_seq bigint, p_head_hash text,
    a_seq bigint[], a_at bigint[], a_actor text[], a_action text[], a_subject text[],
    a_details text[], a_prev text[], a_hash text[]
"""

_TYPES = (
    "text, text, text[], text[], bigint[], bigint[], text[], text[], bigint[], text[], "
    "text[], text[], text[], text[], bigint[], text[], text[], text[], text[], text[], "
    "bigint[], text[], text[], text, bigint, text, bigint[], bigint[], text[], text[], "
    "text[], text[], text[], text[]"
)

# Every look-up also names its keys as a whole (``runs.id = ANY(e_id)``, the messages' threads
# and ids, beside the joins), so that a plan may read them by index rather than read all of the
# tenant's rows and join them.
#
# Endings apply only to runs still pending or running (the first ending stands); starts insert
# runs whose ids are free, and their threads; messages are written for the records that
# applied, skipping those the thread holds already (clients resend their history), at the
# positions after the thread's last, in the order given. Foreign keys are checked when the
# statement ends, so a run and its new thread go in together.
_BODY = """
#variable_conflict use_column
DECLARE
    ended_ids text[];
    started_ids text[];
    last int;
BEGIN
    IF p_role IS NOT NULL THEN
        PERFORM set_config('role', p_role, true);
    END IF;
    PERFORM set_config('app.tenant_id', p_tenant, true);
    -- Until the tables have been analyzed (a new database, before autovacuum's first ANALYZE)
    -- Postgres takes a tenant for a handful of rows, and the generic plan it keeps from then
    -- reads all of the tenant's runs or messages for each record. Each statement is planned for
    -- its values until there are statistics; then plans are kept as usual.
    IF EXISTS (SELECT 1 FROM pg_class
               WHERE oid IN ('runs'::regclass, 'threads'::regclass, 'messages'::regclass)
                 AND reltuples <= 0) THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;

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
    ), started AS (
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
    ), incoming AS (
        SELECT * FROM unnest(m_run, m_thread, m_id, m_role, m_content, m_at, m_tool_calls,
                             m_tool_call_id)
        WITH ORDINALITY AS i(run_id, thread_id, id, role, content, created_at_ms, tool_calls,
                             tool_call_id, ord)
    ), fresh AS (
        SELECT DISTINCT ON (i.thread_id, i.id) i.*
        FROM incoming i
        WHERE i.run_id IN (SELECT id FROM ended UNION ALL SELECT id FROM started)
          AND NOT EXISTS (
              SELECT 1 FROM messages m
              WHERE m.tenant_id = p_tenant AND m.thread_id = ANY(m_thread) AND m.id = ANY(m_id)
                AND m.thread_id = i.thread_id AND m.id = i.id
          )
        ORDER BY i.thread_id, i.id, i.ord
    ), messages_added AS (
        INSERT INTO messages (tenant_id, thread_id, id, position, role, content,
                              created_at_ms, tool_calls, tool_call_id)
        SELECT p_tenant, f.thread_id, f.id,
               coalesce((SELECT max(m.position) FROM messages m
                         WHERE m.tenant_id = p_tenant AND m.thread_id = f.thread_id), -1)
               + row_number() OVER (PARTITION BY f.thread_id ORDER BY f.ord),
               f.role, f.content, f.created_at_ms, f.tool_calls, f.tool_call_id
        FROM fresh f
    )
    SELECT coalesce((SELECT array_agg(id) FROM ended), '{}'),
           coalesce((SELECT array_agg(id) FROM started), '{}')
    INTO ended_ids, started_ids;

    IF p_head_seq IS NULL THEN
        -- The careful way: the caller chains the entries of what applied, from this head.
        RETURN QUERY
        WITH head AS (
            INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (p_tenant, 0, p_genesis)
            ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq
            RETURNING audit_heads.seq, audit_heads.hash
        )
        SELECT 'h'::text, NULL::text, head.seq, head.hash::text FROM head;
        RETURN QUERY
        SELECT 'e'::text, x, NULL::bigint, NULL::text FROM unnest(ended_ids) AS x
        UNION ALL SELECT 's'::text, x, NULL::bigint, NULL::text FROM unnest(started_ids) AS x;
    ELSE
        IF cardinality(ended_ids) <> cardinality(e_id)
           OR cardinality(started_ids) <> cardinality(s_id) THEN
            RAISE EXCEPTION 'a record of the flush did not apply' USING ERRCODE = 'SBJ01';
        END IF;
        last := cardinality(a_seq);
        UPDATE audit_heads SET seq = a_seq[last], hash = a_hash[last]
        WHERE tenant_id = p_tenant AND seq = p_head_seq AND hash = p_head_hash;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the audit head moved' USING ERRCODE = 'SBJ02';
        END IF;
        INSERT INTO audit_entries (tenant_id, seq, at_ms, actor, action, subject, details,
                                   prev_hash, hash)
        SELECT p_tenant, a.* FROM unnest(a_seq, a_at, a_actor, a_action, a_subject, a_details,
                                         a_prev, a_hash)
        AS a(seq, at_ms, actor, action, subject, details, prev_hash, hash);
    END IF;
END
"""


def upgrade() -> None:
    if is_postgres():
        op.execute(
            f"CREATE OR REPLACE FUNCTION sba_journal_flush({_SIGNATURE})\n"
            "RETURNS TABLE (r_kind text, r_id text, r_seq bigint, r_hash text)\n"
            "LANGUAGE plpgsql VOLATILE SECURITY INVOKER\n"
            f"AS $fn${_BODY}$fn$"
        )
        # Only the application role (and so the logins that act as it) may call it; a role
        # that could not write the tables could not use it either, but an API that exposes the
        # schema's functions (Supabase's) need not list it.
        op.execute(f"REVOKE ALL ON FUNCTION sba_journal_flush({_TYPES}) FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION sba_journal_flush({_TYPES}) TO "{app_role()}"')


def downgrade() -> None:
    if is_postgres():
        op.execute(f"DROP FUNCTION IF EXISTS sba_journal_flush({_TYPES})")
