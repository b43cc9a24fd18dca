"""Row-level security DDL for Postgres, used by migrations. Kept in one place so every
tenant-owned table is protected the same way:

- RLS enabled *and forced*, so even the table owner is held to the policies;
- one ``tenant_isolation`` policy for every command, comparing the row's tenant with the
  transaction's ``app.tenant_id`` (``current_setting(…, true)`` is NULL or empty without a
  context, which matches no row: a missing context reads nothing and writes nothing);
- privileges for the application role, which owns nothing and cannot bypass RLS."""

from __future__ import annotations

from alembic import op

DEFAULT_APP_ROLE = "sba_app"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def app_role() -> str:
    return str(op.get_context().config.attributes.get("app_role") or DEFAULT_APP_ROLE)  # type: ignore[union-attr]


def ensure_app_role() -> None:
    """The application role: no login of its own (logins are granted membership), no
    ownership, no BYPASSRLS. Roles are cluster-wide, so it may exist already. A migrating role
    that is not a superuser becomes a member, so it can drop to the role for tenant work."""
    role = app_role()
    op.execute(
        f"""
        DO $$
        BEGIN
            CREATE ROLE {_ident(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$;
        """
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
               AND NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
                EXECUTE 'GRANT {_ident(role)} TO ' || quote_ident(current_user);
            END IF;
            EXECUTE 'GRANT USAGE ON SCHEMA ' || quote_ident(current_schema())
                || ' TO {_ident(role)}';
        END $$;
        """
    )


def protect(table: str, column: str = "tenant_id") -> None:
    role, t = _ident(app_role()), _ident(table)
    check = f"{_ident(column)} = current_setting('app.tenant_id', true)"
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {role}")
    op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {t} USING ({check}) WITH CHECK ({check})")


def unprotect(table: str) -> None:
    t = _ident(table)
    op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {t}")
    op.execute(f"ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON {t} FROM {_ident(app_role())}")


def is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
