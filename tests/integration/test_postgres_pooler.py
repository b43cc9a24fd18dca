"""Pooler mode (Supabase's transaction pooler, PgBouncer in transaction mode): the next
transaction may run on another server connection, so no named prepared statement may be left on
the server. Measured on the server itself through ``pg_prepared_statements``."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from adapters.scope import TenantScope
from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.scope import Database
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from domain.ids import TenantId, ThreadId
from tests.pg import drop_database, fresh_database, pg_template  # noqa: F401 - fixture

_LEFT = text(
    "SELECT count(*) FROM pg_prepared_statements "
    "WHERE statement NOT LIKE '%pg_prepared_statements%'"
)


@pytest.mark.parametrize(("pooler", "expect_left"), [(True, False), (False, True)])
async def test_pooler_mode_leaves_no_prepared_statement_on_the_server(
    request, pooler: bool, expect_left: bool
) -> None:
    url, name = await fresh_database(request.getfixturevalue("pg_template"))
    engine = create_engine_for(url, pool_size=1, max_overflow=0, pooler=pooler)
    db = Database(engine, app_role=DEFAULT_APP_ROLE)
    try:
        for _ in range(3):  # repeated statements are what a cache would prepare
            async with SqlaUnitOfWork(db).transaction(TenantId("ten_x")) as tx:
                assert await tx.threads.get(TenantId("ten_x"), ThreadId("t")) is None
        async with db.connect(TenantScope(TenantId("ten_x"))) as conn:
            # (The counting statement itself is prepared while it runs: it does not count.)
            left = (await conn.execute(_LEFT)).scalar_one()
        assert (left > 0) is expect_left
    finally:
        await engine.dispose()
        await drop_database(name)
