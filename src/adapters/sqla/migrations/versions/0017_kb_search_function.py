"""The knowledge search as one function call (Postgres only): a search is one round trip.

Through a scoped SQLAlchemy connection a search took four (``BEGIN``, the scope's
``set_config``, the query, ``ROLLBACK``). ``sba_kb_search`` is ``SECURITY INVOKER``, like
``sba_journal_flush`` (migration 0016): it drops to the application role when given one, sets
the transaction's tenant with a transaction-local ``set_config`` and runs the same query, so
row-level security holds it exactly as before; called alone, its transaction is the statement's
own and nothing outlives it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from adapters.sqla.rls import app_role, is_postgres

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TYPES = "text, text, text, integer"

# The search both Postgres stores run (the SQLAlchemy one inside its scoped transaction):
# chunks matching the tsquery ``p_query`` in the tenant's configuration, best first, with a
# snippet.
_BODY = """
BEGIN
    IF p_role IS NOT NULL THEN
        PERFORM set_config('role', p_role, true);
    END IF;
    PERFORM set_config('app.tenant_id', p_tenant, true);
    RETURN QUERY
    WITH q AS (
        SELECT t.kb_language::regconfig AS cfg,
               to_tsquery(t.kb_language::regconfig, p_query) AS query
        FROM tenants t WHERE t.id = p_tenant
    ), hits AS (
        SELECT c.document_id, c.ordinal, c.title, c.text, q.cfg, q.query,
               ts_rank_cd(c.tsv, q.query) AS score
        FROM kb_chunks c, q
        WHERE c.tenant_id = p_tenant AND c.tsv @@ q.query
        ORDER BY score DESC, c.document_id, c.ordinal
        LIMIT p_limit
    )
    SELECT h.document_id::text, h.ordinal::integer, h.title::text, d.source::text,
           h.score::real,
           ts_headline(h.cfg, h.text, h.query,
                       'StartSel="",StopSel="",MaxWords=40,MinWords=12,ShortWord=2,'
                       'MaxFragments=1,FragmentDelimiter=" … "')::text
    FROM hits h JOIN kb_documents d ON d.tenant_id = p_tenant AND d.id = h.document_id
    ORDER BY h.score DESC, h.document_id, h.ordinal;
END
"""


def upgrade() -> None:
    if is_postgres():
        op.execute(
            "CREATE OR REPLACE FUNCTION sba_kb_search("
            "p_tenant text, p_role text, p_query text, p_limit integer)\n"
            "RETURNS TABLE (r_document_id text, r_ordinal integer, r_title text, r_source text, "
            "r_score real, r_snippet text)\n"
            "LANGUAGE plpgsql VOLATILE SECURITY INVOKER\n"
            f"AS $fn${_BODY}$fn$"
        )
        # As with the journal's flush: the application role only, not PUBLIC.
        op.execute(f"REVOKE ALL ON FUNCTION sba_kb_search({_TYPES}) FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION sba_kb_search({_TYPES}) TO "{app_role()}"')


def downgrade() -> None:
    if is_postgres():
        op.execute(f"DROP FUNCTION IF EXISTS sba_kb_search({_TYPES})")
