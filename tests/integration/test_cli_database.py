"""``sba db upgrade``, ``sba db check`` and provisioning through the CLI, on SQLite and on
Postgres, in-process with the environment as an operator would set it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from entrypoints.cli.main import main
from tests.pg import _run, drop_database, fresh_database, pg_template  # noqa: F401 - fixture


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("SBA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SBA_LOG__JSON", "false")
    if request.param == "sqlite":
        yield "sqlite"
        return
    made: dict[str, str] = {}

    async def create() -> None:
        made["url"], made["name"] = await fresh_database(request.getfixturevalue("pg_template"))

    _run(create)
    monkeypatch.setenv("SBA_DATABASE_URL", made["url"])
    yield made["url"]
    _run(lambda: drop_database(made["name"]))


def test_upgrade_check_and_provisioning_work_and_are_logged(database, capsys) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "check"]) == 0
    out = capsys.readouterr().out
    assert "the database schema matches the models" in out
    if database != "sqlite":
        assert "tenant isolation holds: row-level security forced" in out
    assert main(["tenant", "create", "acme", "--kb-language", "indonesian"]) == 0
    assert main(["apikey", "create", "--tenant", "acme", "--role", "admin"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("sba_")
    assert main(["tenant", "create", "acme"]) == 1  # taken
    assert "already exists" in capsys.readouterr().err
    if database == "sqlite":
        return

    async def read() -> tuple[list[tuple[str, str]], str]:
        engine = create_async_engine(database)
        try:
            async with engine.connect() as conn:
                log = (
                    await conn.execute(text("SELECT actor, action FROM admin_log ORDER BY id"))
                ).all()
                language = (
                    await conn.execute(text("SELECT kb_language FROM tenants WHERE slug = 'acme'"))
                ).scalar_one()
            return [tuple(r) for r in log], language
        finally:
            await engine.dispose()

    got: dict[str, object] = {}

    async def collect() -> None:
        got["log"], got["language"] = await read()

    _run(collect)
    actions = [action for _, action in got["log"]]  # type: ignore[union-attr]
    assert actions == ["tenant.create acme", "apikey.create acme admin", "tenant.create acme"]
    assert all(actor.startswith("cli:") for actor, _ in got["log"])  # type: ignore[union-attr]
    assert got["language"] == "indonesian"


def test_an_unknown_kb_language_is_refused_with_the_choices(database, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["tenant", "create", "acme", "--kb-language", "klingon"])
    assert "invalid choice: 'klingon'" in capsys.readouterr().err
