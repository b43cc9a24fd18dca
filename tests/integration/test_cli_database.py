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


def _sql(database: str, tmp_path, statement: str) -> list[tuple]:
    url = database if database != "sqlite" else f"sqlite+aiosqlite:///{tmp_path / 'sba.db'}"
    got: dict[str, list[tuple]] = {}

    async def go() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement))
                got["rows"] = [tuple(r) for r in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    _run(go)
    return got["rows"]


def test_sba_audit_verify_names_the_entry_that_was_edited_or_removed(
    database, tmp_path, capsys
) -> None:
    import json

    assert main(["db", "upgrade"]) == 0
    assert main(["tenant", "create", "acme"]) == 0
    for _ in range(3):
        assert main(["apikey", "create", "--tenant", "acme", "--role", "member"]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--tenant", "acme"]) == 0
    assert "4 entries, chain intact" in capsys.readouterr().out

    assert main(["audit", "export", "--tenant", "acme"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4]
    assert [e["action"] for e in lines] == ["tenant.created"] + ["apikey.created"] * 3
    assert lines[1]["prev_hash"] == lines[0]["hash"]

    # An edit of one column of entry 3, by someone with direct database access.
    _sql(database, tmp_path, "UPDATE audit_entries SET actor = 'admin:someone-else' WHERE seq = 3")
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "tenant acme" in err and "TAMPERED at entry 3: was changed after it was written" in err

    # Put it back, then remove the last entry: the head still says 4.
    original = lines[2]["actor"]
    _sql(database, tmp_path, f"UPDATE audit_entries SET actor = '{original}' WHERE seq = 3")
    assert main(["audit", "verify", "--tenant", "acme"]) == 0
    _sql(database, tmp_path, "DELETE FROM audit_entries WHERE seq = 4")
    assert main(["audit", "verify", "--tenant", "acme"]) == 1
    assert "entry 4: missing" in capsys.readouterr().err


def test_tenant_and_key_lifecycle_through_the_cli_as_the_api_sees_it(
    database, tmp_path, capsys, monkeypatch
) -> None:
    """Keys expire and are revoked, tenants are suspended, resumed and deleted (after an
    export of everything they own), and the API refuses accordingly at once."""
    import asyncio
    import json

    from litestar.testing import AsyncTestClient

    from entrypoints.http.app import create_app
    from entrypoints.settings import load_settings

    monkeypatch.setenv("SBA_AUTH__CACHE_TTL_MS", "0")
    monkeypatch.setenv("SBA_LLM__LOADTEST", "true")
    assert main(["db", "upgrade"]) == 0
    for slug in ("acme", "other"):
        assert main(["tenant", "create", slug]) == 0
    assert main(["apikey", "create", "--tenant", "acme", "--role", "admin"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["apikey", "create", "--tenant", "other", "--role", "admin"]) == 0
    other_key = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["apikey", "create", "--tenant", "acme", "--expires-in-days", "0.0000001"]) == 0
    expired = capsys.readouterr().out.strip().splitlines()[-1]

    async def status(k: str, path: str = "/v1/tools", method: str = "GET", **kw) -> tuple:
        async with AsyncTestClient(create_app(load_settings())) as client:
            r = await client.request(method, path, headers={"Authorization": f"Bearer {k}"}, **kw)
            body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
            return r.status_code, body.get("code"), body.get("detail", "")

    def call(*a, **kw):
        return asyncio.run(status(*a, **kw))

    assert call(key)[0] == 200
    assert call(expired) == (401, "unauthenticated", "the API key expired")
    doc = json.dumps({"id": "plan", "title": "Plan", "content": "Secret plan of acme."})
    assert call(key, "/v1/kb/documents", "POST", content=doc)[0] == 201

    assert main(["tenant", "show", "acme"]) == 0
    shown = capsys.readouterr().out
    key_ids = [line.split()[1] for line in shown.splitlines() if line.strip().startswith("key ")]
    assert len(key_ids) == 2 and "last used 20" in shown  # the admin key was used

    assert main(["tenant", "suspend", "acme"]) == 0
    assert call(key) == (403, "forbidden", "tenant acme is suspended")
    assert main(["tenant", "resume", "acme"]) == 0
    assert call(key)[0] == 200

    assert main(["apikey", "revoke", "--tenant", "acme", key_ids[0]]) == 0
    assert call(key) == (401, "unauthenticated", "the API key was revoked")
    assert main(["apikey", "revoke", "--tenant", "other", key_ids[0]]) == 1  # not other's key

    assert main(["tenant", "list"]) == 0
    assert "acme" in capsys.readouterr().out
    assert main(["tenant", "delete", "acme", "--export", str(tmp_path / "x.jsonl")]) == 2
    export = tmp_path / "acme.jsonl"
    assert main(["tenant", "delete", "acme", "--export", str(export), "--yes"]) == 0
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    tables = {r["table"] for r in rows}
    assert {"tenants", "api_keys", "kb_documents", "kb_chunks", "audit_entries"} <= tables
    assert all(r["row"].get("tenant_id", r["row"].get("id")) == rows[0]["row"]["id"] for r in rows)
    assert any("Secret plan of acme." in json.dumps(r) for r in rows)
    actions = [r["row"]["action"] for r in rows if r["table"] == "audit_entries"]
    assert {"tenant.suspended", "tenant.active", "apikey.revoked"} <= set(actions)

    assert main(["tenant", "show", "acme"]) == 1
    assert call(other_key)[0] == 200  # the other tenant is untouched
    assert main(["audit", "verify"]) == 0


def test_a_scoped_key_from_the_cli_is_shown_with_its_scopes_and_held_to_them(
    database, capsys, monkeypatch
) -> None:
    import asyncio

    from litestar.testing import AsyncTestClient

    from entrypoints.http.app import create_app
    from entrypoints.settings import load_settings

    assert main(["db", "upgrade"]) == 0
    assert main(["tenant", "create", "acme"]) == 0
    assert main(["apikey", "create", "--tenant", "acme", "--scope", "kb:read"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "scopes kb:read" in out[-2]
    key = out[-1]
    with pytest.raises(SystemExit) as refused:
        main(["apikey", "create", "--tenant", "acme", "--scope", "everything"])
    assert refused.value.code == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err
    assert main(["tenant", "show", "acme"]) == 0
    assert "scopes kb:read" in capsys.readouterr().out

    async def statuses() -> tuple[int, int]:
        h = {"Authorization": f"Bearer {key}"}
        async with AsyncTestClient(create_app(load_settings())) as client:
            read = await client.get("/v1/kb/documents", headers=h)
            write = await client.post(
                "/v1/kb/documents", json={"title": "T", "content": "x"}, headers=h
            )
            return read.status_code, write.status_code

    assert asyncio.run(statuses()) == (200, 403)


def test_a_read_only_key_with_a_writing_scope_is_refused(database, capsys) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["tenant", "create", "acme"]) == 0
    capsys.readouterr()
    refused = ["apikey", "create", "--tenant", "acme", "--role", "readonly", "--scope", "kb:write"]
    assert main(refused) == 1
    assert "kb:write" in capsys.readouterr().err
    minted = ["apikey", "create", "--tenant", "acme", "--role", "readonly", "--scope", "kb:read"]
    assert main(minted) == 0
