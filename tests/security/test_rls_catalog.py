"""The database side of isolation, read from Postgres's catalog: every table holding tenant rows
has row-level security enabled and forced with a tenant policy, and the application role can
neither bypass it nor own anything. ``isolation_problems`` (what ``sba serve`` refuses to start
on and ``sba db check`` prints) notices when any of that is undone."""

from __future__ import annotations

from sqlalchemy import text

from adapters.sqla.rls import DEFAULT_APP_ROLE
from adapters.sqla.scope import Database
from adapters.sqla.tables import TENANT_TABLES, metadata
from adapters.sqla.uow import SqlaUnitOfWork, create_engine_for
from tests.pg import drop_database, fresh_database

PROTECTED = {*TENANT_TABLES, "tenants"}


async def _db(request, *, app_role: str | None = DEFAULT_APP_ROLE):
    url, name = await fresh_database(request.getfixturevalue("pg_template"))
    engine = create_engine_for(url, pool_size=2, max_overflow=0)
    return Database(engine, app_role=app_role), engine, name


async def test_every_table_with_tenant_rows_is_protected_and_forced(request) -> None:
    _, engine, name = await _db(request)
    try:
        # The models agree with the list: every table with a tenant_id column is in it.
        assert {t.name for t in metadata.sorted_tables if "tenant_id" in t.c} == {
            *TENANT_TABLES,
            "dead_letters",
        }
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                        "array_agg(p.polname ORDER BY p.polname) AS policies "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "LEFT JOIN pg_policy p ON p.polrelid = c.oid "
                        "WHERE n.nspname = 'public' AND c.relkind = 'r' GROUP BY 1, 2, 3"
                    )
                )
            ).all()
        by_table = {r.relname: r for r in rows}
        for table in PROTECTED:
            r = by_table[table]
            assert r.relrowsecurity and r.relforcerowsecurity, table
            assert "tenant_isolation" in r.policies, table
        # Only the two authentication lookups add a policy of their own.
        extra = {t: set(r.policies) - {"tenant_isolation", None} for t, r in by_table.items()}
        assert {t: p for t, p in extra.items() if p} == {
            "api_keys": {"key_lookup"},
            "tenants": {"key_lookup"},
        }
        # Dead letters: forced, and no policy at all, so only the admin path sees them.
        dead = by_table["dead_letters"]
        assert dead.relrowsecurity and dead.relforcerowsecurity
        assert dead.policies == [None]
    finally:
        await engine.dispose()
        await drop_database(name)


async def test_the_application_role_is_unprivileged_and_cannot_touch_admin_tables(
    request,
) -> None:
    db, engine, name = await _db(request)
    try:
        async with engine.connect() as conn:
            role = (
                await conn.execute(
                    text(
                        "SELECT rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb "
                        "FROM pg_roles WHERE rolname = :r"
                    ),
                    {"r": DEFAULT_APP_ROLE},
                )
            ).one()
            assert tuple(role) == (False, False, False, False, False)
            privileges = {
                table: (
                    await conn.execute(
                        text("SELECT has_table_privilege(:r, :t, 'SELECT, INSERT, UPDATE')"),
                        {"r": DEFAULT_APP_ROLE, "t": table},
                    )
                ).scalar_one()
                for table in ("admin_log", "alembic_version", "dead_letters", *PROTECTED)
            }
        assert privileges == {
            "admin_log": False,
            "alembic_version": False,
            "dead_letters": False,
            **dict.fromkeys(PROTECTED, True),
        }
        assert await SqlaUnitOfWork(db).isolation_problems() == []
    finally:
        await engine.dispose()
        await drop_database(name)


async def test_isolation_problems_name_an_unforced_table_and_a_privileged_role(request) -> None:
    db, engine, name = await _db(request)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE messages NO FORCE ROW LEVEL SECURITY"))
        problems = await SqlaUnitOfWork(db).isolation_problems()
        assert problems == [
            "table messages holds tenant rows but row-level security is not forced on it"
        ]
        # Without dropping to the application role, tenant work would run as the superuser.
        privileged = await SqlaUnitOfWork(Database(engine, app_role=None)).isolation_problems()
        assert any("bypasses row-level security" in p for p in privileged)
        assert any("owns" in p for p in privileged)
        # An admin path that cannot bypass RLS would see nothing: that is a problem too.
        unprivileged_admin = Database(engine, app_role=DEFAULT_APP_ROLE)
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE messages FORCE ROW LEVEL SECURITY"))
            await conn.execute(text(f"ALTER ROLE {DEFAULT_APP_ROLE} LOGIN"))
        try:
            app_url = engine.url.set(username=DEFAULT_APP_ROLE)
            app_engine = create_engine_for(app_url.render_as_string(hide_password=False))
            try:
                weak = Database(app_engine, app_role=DEFAULT_APP_ROLE)
                problems = await SqlaUnitOfWork(weak).isolation_problems()
                assert problems == [
                    f"the admin path runs as role '{DEFAULT_APP_ROLE}', which cannot bypass "
                    "row-level security: provisioning would see no rows (set "
                    "SBA_DATABASE_ADMIN_URL to the schema owner with BYPASSRLS, or a superuser)"
                ]
                assert await SqlaUnitOfWork(unprivileged_admin).isolation_problems() == []
            finally:
                await app_engine.dispose()
        finally:
            async with engine.begin() as conn:
                await conn.execute(text(f"ALTER ROLE {DEFAULT_APP_ROLE} NOLOGIN"))
    finally:
        await engine.dispose()
        await drop_database(name)
