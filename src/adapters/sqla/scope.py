"""Scoped connections: every SQL adapter enters the database through here, so every transaction
starts in exactly one scope (a tenant, an API-key lookup, or the audited admin path).

On Postgres the scope becomes the row-level-security context of the transaction, set with
``set_config(…, true)`` (transaction-local: it ends with the transaction, so a pooled
connection, or a pooler's server connection, never carries one tenant's context into another
request). The same statement drops to the application role with ``set_config('role', …)``, so
even a privileged login runs tenant work under policies it cannot bypass. SQLite is the embedded
single-user database: the scope is enforced by the repositories alone."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.scope import AdminScope, Scope, TenantScope
from adapters.sqla.tables import admin_log
from application.errors import Conflict, ServiceUnavailable, TenantScopeViolation
from domain.ids import TenantId

# Postgres raises insufficient_privilege (42501) when a row-level-security WITH CHECK fails.
_RLS_SQLSTATE = "42501"


_ENTER_TENANT = text("SELECT set_config('app.tenant_id', :value, true)")
_ENTER_KEY = text("SELECT set_config('app.key_prefix', :value, true)")
_ENTER_TENANT_AS = text(
    "SELECT set_config('role', :role, true), set_config('app.tenant_id', :value, true)"
)
_ENTER_KEY_AS = text(
    "SELECT set_config('role', :role, true), set_config('app.key_prefix', :value, true)"
)


_ROLE = text(
    "SELECT current_user AS name, r.rolsuper, r.rolbypassrls FROM pg_roles r "
    "WHERE r.rolname = current_user"
)


UNAVAILABLE = "the database is unavailable"
log = logging.getLogger("sba.sql")


def log_driver_error(what: str, exc: BaseException) -> None:
    """The driver's own words and the statement, for the operator: never in an error a client
    sees (ADR 0039). Parameters (tenant ids, people's text) are left out of the log too."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig if exc.orig is not None else exc
        log.warning(
            "%s: %s: %s [statement: %s]",
            what,
            type(orig).__name__,
            str(orig).strip(),
            (exc.statement or "").strip(),
        )
    elif isinstance(exc, SQLAlchemyError):
        # Other SQLAlchemy errors may quote parameters in their text: the class is enough.
        log.warning("%s: %s", what, type(exc).__name__)
    else:
        log.warning("%s: %s: %s", what, type(exc).__name__, exc)


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )


class Database:
    """An engine for tenant work and one for the admin path (the same engine unless a separate
    admin URL is configured), plus the role tenant work runs as on Postgres."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        admin_engine: AsyncEngine | None = None,
        app_role: str | None = None,
    ) -> None:
        self.engine = engine
        self.admin_engine = admin_engine or engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self.app_role = app_role if self.is_postgres and app_role else None

    @asynccontextmanager
    async def connect(self, scope: Scope) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction in ``scope``. The caller commits; otherwise the
        transaction is rolled back. Driver errors leave as application errors."""
        try:
            if isinstance(scope, AdminScope):
                await self._record(scope)
                engine = self.admin_engine
            else:
                engine = self.engine
            conn = await self._begin(engine, scope)
            try:
                yield conn
                if conn.in_transaction():
                    await conn.rollback()
            finally:
                await conn.close()
        except IntegrityError as exc:
            log_driver_error("a change conflicted with stored data", exc)
            raise Conflict("the change conflicts with stored data") from exc
        except DBAPIError as exc:
            log_driver_error("the database refused a statement", exc)
            if _sqlstate(exc) == _RLS_SQLSTATE:
                raise TenantScopeViolation(
                    "the database refused a row outside the transaction's tenant"
                ) from exc
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except (SQLAlchemyError, OSError) as exc:
            log_driver_error("the database is unavailable", exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc

    @asynccontextmanager
    async def begin(self, scope: Scope) -> AsyncIterator[AsyncConnection]:
        """Like ``connect``, committing when the block ends without an error."""
        async with self.connect(scope) as conn:
            yield conn
            await conn.commit()

    async def _begin(self, engine: AsyncEngine, scope: Scope) -> AsyncConnection:
        """A pooled connection in a begun transaction in ``scope``. Connections are not pinged
        before use (a round trip per transaction): one the server closed fails on the scope's
        first statement, before any work, and that is retried once on a fresh connection (the
        pool discards its older connections when it sees a disconnect)."""
        for attempt in (1, 2):
            conn = engine.connect()
            try:
                await conn.start()
                await conn.begin()
                if self.is_postgres:
                    await self._enter(conn, scope)
                return conn
            except DBAPIError as exc:
                await conn.close()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
            except BaseException:
                await conn.close()
                raise
        raise AssertionError("unreachable")

    async def _enter(self, conn: AsyncConnection, scope: Scope) -> None:
        if isinstance(scope, AdminScope):
            return
        value = scope.tenant_id if isinstance(scope, TenantScope) else scope.prefix
        if self.app_role is None:
            stmt = _ENTER_TENANT if isinstance(scope, TenantScope) else _ENTER_KEY
            await conn.execute(stmt, {"value": value})
        else:
            stmt = _ENTER_TENANT_AS if isinstance(scope, TenantScope) else _ENTER_KEY_AS
            await conn.execute(stmt, {"role": self.app_role, "value": value})

    async def _record(self, scope: AdminScope) -> None:
        """The admin log entry is committed on its own, before the work: an admin transaction
        that fails or only reads is recorded all the same."""
        async with self.admin_engine.begin() as conn:
            await conn.execute(
                insert(admin_log).values(
                    at_ms=int(time.time() * 1000), actor=scope.actor, action=scope.action
                )
            )

    async def isolation_problems(self) -> list[str]:
        if not self.is_postgres:
            return []
        problems: list[str] = []
        async with self.connect(TenantScope(TenantId(""))) as conn:
            row = (await conn.execute(_ROLE)).one()
            if row.rolsuper or row.rolbypassrls:
                problems.append(
                    f"tenant transactions run as role {row.name!r}, which bypasses row-level "
                    "security (set SBA_POSTGRES__APP_ROLE, or connect as an unprivileged role)"
                )
            owned = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_tables WHERE tableowner = current_user "
                        "AND schemaname = current_schema()"
                    )
                )
            ).scalar_one()
            if owned:
                problems.append(
                    f"role {row.name!r} owns {owned} tables: the application role must own nothing"
                )
            unprotected = (
                (
                    await conn.execute(
                        text(
                            "SELECT c.relname FROM pg_class c "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                            "AND (c.relname = 'tenants' OR EXISTS (SELECT 1 FROM pg_attribute a "
                            "WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')) "
                            "AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1"
                        )
                    )
                )
                .scalars()
                .all()
            )
            problems.extend(
                f"table {name} holds tenant rows but row-level security is not forced on it"
                for name in unprotected
            )
        async with self.admin_engine.connect() as conn:
            row = (await conn.execute(_ROLE)).one()
            if not (row.rolsuper or row.rolbypassrls):
                problems.append(
                    f"the admin path runs as role {row.name!r}, which cannot bypass row-level "
                    "security: provisioning would see no rows (set SBA_DATABASE_ADMIN_URL to the "
                    "schema owner with BYPASSRLS, or a superuser)"
                )
        return problems
