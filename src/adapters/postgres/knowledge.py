"""Knowledge search on Postgres through asyncpg: one round trip per search.

A backend tool's search is on a run's critical path. Through a scoped SQLAlchemy connection it
was four round trips (``BEGIN``, the tenant's ``set_config``, the query, ``ROLLBACK``) plus the
Core's compile and the greenlet bridge; here it is one call of ``sba_kb_search`` (migration
0017), which sets the role and the tenant for its own statement and runs the same query under
row-level security. Everything else (indexing, deleting, counting) stays on SQLAlchemy."""

from __future__ import annotations

import logging

import asyncpg

from adapters.postgres.pool import LazyPool, is_connection_error
from adapters.sqla.knowledge import PostgresKnowledgeStore, tsquery
from adapters.sqla.scope import UNAVAILABLE, Database
from application.errors import ServiceUnavailable
from domain.ids import TenantId
from domain.knowledge.model import SearchHit
from domain.knowledge.query import search_terms

log = logging.getLogger("sba.sql")

_SEARCH = "SELECT * FROM sba_kb_search($1, $2, $3, $4)"


class AsyncpgKnowledgeStore(PostgresKnowledgeStore):
    """``dsn`` is a plain ``postgresql://`` URL to the database ``db`` is on; searches drop to
    ``app_role`` (None: the login role, which must then be unprivileged), as ``db`` does."""

    def __init__(
        self,
        db: Database,
        dsn: str,
        *,
        app_role: str | None = None,
        pooler: bool = False,
        connections: int = 4,
    ) -> None:
        super().__init__(db)
        self._role = app_role
        self._pool = LazyPool(dsn, size=connections, pooler=pooler)

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        terms = search_terms(query)
        if not terms:
            return []
        args = (tenant_id, self._role, tsquery(terms), limit)
        for attempt in (1, 2):
            try:
                rows = await self._pool.fetch(_SEARCH, *args)
                break
            except Exception as exc:
                if attempt == 1 and is_connection_error(exc):
                    continue  # a connection the server closed while it sat in the pool
                # The driver's words and the statement for the operator, never for the client.
                log.warning(
                    "knowledge search failed: %s: %s [statement: %s]",
                    type(exc).__name__,
                    str(exc).strip() if isinstance(exc, asyncpg.PostgresError) else "",
                    _SEARCH,
                )
                raise ServiceUnavailable(UNAVAILABLE) from exc
        return [
            SearchHit(
                document_id=r[0],
                title=r[2],
                source=r[3],
                ordinal=r[1],
                snippet=r[5],
                score=float(r[4]),
            )
            for r in rows
        ]

    async def close(self) -> None:
        await self._pool.close()
