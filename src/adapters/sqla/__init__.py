"""SQLAlchemy adapters (Core, async): SQLite embedded, Postgres in production."""
