"""``sba``: serve, migrate, provision tenants and keys."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from dishka import AsyncContainer

from application.audit.use_cases import AuditTrails, TrailReport
from application.errors import ApplicationError
from application.jobs.use_cases import ManageDeadLetters
from application.knowledge.use_cases import IngestDocument
from application.ports import SchemaMigrator, UnitOfWork
from application.tenancy.ports import TenantExport
from application.tenancy.use_cases import (
    CreateApiKey,
    CreateTenant,
    EnsureDemoTenant,
    ManageTenants,
)
from domain.audit.model import AuditEntry
from domain.errors import DomainError
from domain.jobs.model import DeadLetter
from domain.tenancy.model import (
    KB_LANGUAGES,
    ApiKey,
    IssuedKey,
    Role,
    Scope,
    Tenant,
    TenantStatus,
    scopes_text,
)
from entrypoints.cli.chat import add_chat_command
from entrypoints.ioc.container import make_container
from entrypoints.ioc.jobs import start_jobs, work
from entrypoints.logs import configure_logging
from entrypoints.seed import seed_demo_knowledge
from entrypoints.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def _actor() -> str:
    """Who ran an admin command, for the admin log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _with_container(settings: Settings, job: Callable[[AsyncContainer], Awaitable[T]]) -> T:
    async def main() -> T:
        container = make_container(settings)
        try:
            if settings.is_embedded_database:
                # The embedded database is ours to manage: bring it up to date before use.
                await (await container.get(SchemaMigrator)).upgrade()
            await start_jobs(container)
            return await job(container)
        finally:
            await container.close()

    return asyncio.run(main())


async def _ensure_demo(container: AsyncContainer) -> IssuedKey | None:
    """Creates the demo tenant with its knowledge base on first use; the key when it did."""
    issued = await (await container.get(EnsureDemoTenant))()
    if issued is not None:
        await seed_demo_knowledge(await container.get(IngestDocument), issued.key.tenant_id)
    return issued


def _serve_workers(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else settings.http.workers
    if workers < 1:
        raise SettingsError("sba serve --workers: at least 1")
    if workers > 1 and not settings.redis_url:
        raise SettingsError(
            f"refusing to serve with {workers} workers: each process would keep its own rate "
            "limits, run caps, run streams, idempotency keys and webhook replay guard, so "
            "limits would multiply and a stream resumed on another worker would not be found; "
            "set SBA_REDIS_URL to share them, or serve with one worker"
        )
    return workers


def worker_app() -> Any:
    """The application of one of several server processes (``sba serve --workers N``): each
    reads the settings from the environment it inherited and names itself in its logs."""
    from entrypoints.http.app import create_app

    settings = load_settings()
    configure_logging(settings.log.level, json=settings.log.json, worker=os.getpid())
    return create_app(settings)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from entrypoints.http.app import create_app

    workers = _serve_workers(settings, args)

    async def prepare(container: AsyncContainer) -> str | None:
        problems = await (await container.get(UnitOfWork)).isolation_problems()
        if problems:
            raise SettingsError(
                "refusing to serve: tenant isolation is weaker than designed: "
                + "; ".join(problems)
            )
        if not settings.seed_demo:
            return None
        issued = await _ensure_demo(container)
        return issued.plaintext if issued else None

    key = _with_container(settings, prepare)
    host = args.host or settings.http.host
    port = args.port if args.port is not None else settings.http.port
    url = f"http://{host}:{port}"
    if key:
        print("Created the demo tenant 'demo'. Its admin API key (shown once):", flush=True)
        print(f"  {key}")
        print("Stream a run:")
        print(
            f"  curl -N {url}/v1/agents/assistant/runs -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' -H 'Accept: text/event-stream' "
            """-d '{"threadId":"t1","runId":"r1","messages":"""
            """[{"id":"m1","role":"user","content":"What can you do?"}]}'"""
        )
        print(f"Or chat at {url}/ with this key (set up a workspace: {url}/welcome)")
    processes = f" with {workers} worker processes" if workers > 1 else ""
    print(f"SBA listening on {url}{processes} (API docs: {url}/schema)", flush=True)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        # Requests are logged by the application (SBA_HTTP__ACCESS_LOG), in the log format.
        "access_log": False,
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "timeout_graceful_shutdown": int(settings.runs.shutdown_grace_s) + 1,
        "backlog": 4096,
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # uvicorn's supervisor binds the socket once and starts the workers, which all accept on
    # it; SIGTERM or SIGINT to this process stops each worker gracefully, and a worker that
    # dies is replaced (ADR 0036). Workers read their settings from the environment.
    os.environ["SBA_HTTP__WORKERS"] = str(workers)
    uvicorn.run(
        "entrypoints.cli.main:worker_app",
        factory=True,
        workers=workers,
        log_config=None,
        **options,
    )
    return 0


def _cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> None:
        await (await container.get(SchemaMigrator)).upgrade()

    _with_container(settings, job)
    print(f"database at {settings.effective_database_url.split('@')[-1]} is up to date")
    return 0


def _cmd_db_check(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> tuple[list[str], list[str]]:
        differences = await (await container.get(SchemaMigrator)).check()
        return differences, await (await container.get(UnitOfWork)).isolation_problems()

    differences, problems = _with_container(settings, job)
    if differences:
        print("the database schema differs from the models:")
        for line in differences:
            print(f"  {line}")
    else:
        print("the database schema matches the models")
    if problems:
        print("tenant isolation is weaker than designed:")
        for line in problems:
            print(f"  {line}")
    elif settings.is_embedded_database:
        print("tenant isolation: the embedded database is single-user; repositories hold scope")
    else:
        print("tenant isolation holds: row-level security forced, tenant work unprivileged")
    return 1 if differences or problems else 0


def _cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> str:
        tenant = await (await container.get(CreateTenant))(
            args.slug, args.name, actor=_actor(), kb_language=args.kb_language
        )
        return f"created tenant {tenant.slug} ({tenant.id})"

    print(_with_container(settings, job))
    return 0


def _cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> str:
        if settings.seed_demo and args.tenant == "demo":
            await _ensure_demo(container)
        days = args.expires_in_days
        issued = await (await container.get(CreateApiKey))(
            args.tenant,
            Role(args.role),
            actor=_actor(),
            expires_in_ms=int(days * 86_400_000) if days is not None else None,
            scopes=frozenset(Scope(s) for s in args.scope) if args.scope else None,
        )
        return issued.plaintext

    key = _with_container(settings, job)
    scoped = f", scopes {' '.join(args.scope)}" if args.scope else ""
    print(f"API key for tenant {args.tenant} with role {args.role}{scoped} (shown once):")
    print(key)
    return 0


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _cmd_tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> list[Tenant]:
        return await (await container.get(ManageTenants)).all(actor=_actor())

    for t in _with_container(settings, job):
        print(f"{t.slug}  {t.id}  {t.status.value}  created {_when(t.created_at_ms)}")
    return 0


def _cmd_tenant_show(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> tuple[Tenant, list[ApiKey]]:
        return await (await container.get(ManageTenants)).get(args.slug, actor=_actor())

    tenant, keys = _with_container(settings, job)
    print(
        f"tenant {tenant.slug} ({tenant.id}): {tenant.status.value}, {tenant.name!r}, "
        f"kb language {tenant.kb_language}, created {_when(tenant.created_at_ms)}"
    )
    for k in keys:
        state = "revoked" if k.revoked else "active"
        print(
            f"  key {k.id}  sba_{k.prefix}_…  {k.role.value}  {state}  "
            f"created {_when(k.created_at_ms)}  expires {_when(k.expires_at_ms)}  "
            f"last used {_when(k.last_used_at_ms)}  scopes {scopes_text(k.scopes) or 'all'}"
        )
    return 0


def _tenant_status(status: TenantStatus) -> Callable[[Settings, argparse.Namespace], int]:
    def command(settings: Settings, args: argparse.Namespace) -> int:
        async def job(container: AsyncContainer) -> Tenant:
            manage = await container.get(ManageTenants)
            return await manage.set_status(args.slug, status, actor=_actor())

        tenant = _with_container(settings, job)
        print(f"tenant {tenant.slug} is {tenant.status.value}")
        return 0

    return command


def _cmd_tenant_delete(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> int:
        manage = await container.get(ManageTenants)
        tenant, _ = await manage.get(args.slug, actor=_actor())
        export = await container.get(TenantExport)
        count = 0
        # The export is written and flushed to disk before anything is deleted.
        with open(args.export, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            async for table, row in export.rows(tenant.id):
                out.write(json.dumps({"table": table, "row": row}, ensure_ascii=False) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        await manage.delete(args.slug, actor=_actor())
        return count

    if not args.yes:
        print("sba: deleting a tenant removes all its data; add --yes to confirm", file=sys.stderr)
        return 2
    count = _with_container(settings, job)
    print(f"exported {count} rows to {args.export}; deleted tenant {args.slug}")
    return 0


def _cmd_apikey_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> None:
        manage = await container.get(ManageTenants)
        await manage.revoke_key(args.tenant, args.key_id, actor=_actor())

    _with_container(settings, job)
    print(f"revoked API key {args.key_id} of tenant {args.tenant}")
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> None:
        print(f"SBA worker consuming {settings.job_stream}", flush=True)
        await work(container, settings)

    _with_container(settings, job)
    return 0


def _letter_line(letter: DeadLetter) -> str:
    job = letter.job
    return (
        f"{letter.id}  {job.kind}  tenant={job.tenant_id}  key={job.key}  "
        f"attempt={job.attempt}  error={letter.error}"
    )


def _cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> list[DeadLetter]:
        return await (await container.get(ManageDeadLetters)).list(args.limit)

    letters = _with_container(settings, job)
    for letter in letters:
        print(_letter_line(letter))
    print(f"{len(letters)} dead letter(s)")
    return 0


def _cmd_dlq_retry(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> int:
        manage = await container.get(ManageDeadLetters)
        if args.all:
            return await manage.retry_all()
        for letter_id in args.ids:
            await manage.retry(letter_id)
        return len(args.ids)

    if not args.all and not args.ids:
        print("sba: name the dead letters to retry, or --all", file=sys.stderr)
        return 2
    print(f"queued {_with_container(settings, job)} job(s) again")
    return 0


def _cmd_dlq_drop(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> None:
        manage = await container.get(ManageDeadLetters)
        for letter_id in args.ids:
            await manage.drop(letter_id)

    _with_container(settings, job)
    print(f"dropped {len(args.ids)} dead letter(s)")
    return 0


def _cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> list[TrailReport]:
        trails = AuditTrails(await container.get(UnitOfWork))
        return [
            await trails.verify(tenant)
            for tenant in await trails.tenants(actor=_actor(), slug=args.tenant)
        ]

    reports = _with_container(settings, job)
    failed = 0
    for report in reports:
        name = f"tenant {report.tenant.slug} ({report.tenant.id})"
        if report.broken is None:
            print(f"{name}: {report.entries} entries, chain intact")
        else:
            failed += 1
            print(f"{name}: TAMPERED at {report.broken}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_audit_export(settings: Settings, args: argparse.Namespace) -> int:
    async def job(container: AsyncContainer) -> list[str]:
        trails = AuditTrails(await container.get(UnitOfWork))
        [tenant] = await trails.tenants(actor=_actor(), slug=args.tenant)
        return [_entry_json(entry) async for entry in trails.entries(tenant)]

    lines = _with_container(settings, job)
    text = "".join(line + "\n" for line in lines)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    print(f"exported {len(lines)} audit entries", file=sys.stderr)
    return 0


def _entry_json(entry: AuditEntry) -> str:
    return json.dumps(
        {
            "tenant_id": entry.tenant_id,
            "seq": entry.seq,
            "at_ms": entry.at_ms,
            "actor": entry.actor,
            "action": entry.action,
            "subject": entry.subject,
            "details": dict(entry.details),
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sba", description="Smart Business Assistant")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None, help="default: SBA_HTTP__HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: SBA_HTTP__PORT or 8000")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes sharing the port (default: SBA_HTTP__WORKERS or 1); "
        "more than one needs SBA_REDIS_URL",
    )
    serve.set_defaults(handler=_cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="migrate the configured database").set_defaults(
        handler=_cmd_db_upgrade
    )
    db.add_parser("check", help="compare the database schema with the models").set_defaults(
        handler=_cmd_db_check
    )

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="tenant", required=True)
    create = tenant.add_parser("create", help="create a tenant")
    create.add_argument("slug")
    create.add_argument("--name", default=None)
    create.add_argument(
        "--kb-language",
        choices=sorted(KB_LANGUAGES),
        default="simple",
        help="text-search configuration of the tenant's knowledge base on Postgres "
        "(default: simple, no stemming)",
    )
    create.set_defaults(handler=_cmd_tenant_create)
    tenant.add_parser("list", help="list tenants").set_defaults(handler=_cmd_tenant_list)
    show = tenant.add_parser("show", help="a tenant and its API keys")
    show.add_argument("slug")
    show.set_defaults(handler=_cmd_tenant_show)
    suspend = tenant.add_parser("suspend", help="refuse the tenant's requests and new runs")
    suspend.add_argument("slug")
    suspend.set_defaults(handler=_tenant_status(TenantStatus.SUSPENDED))
    resume = tenant.add_parser("resume", help="let a suspended tenant in again")
    resume.add_argument("slug")
    resume.set_defaults(handler=_tenant_status(TenantStatus.ACTIVE))
    remove = tenant.add_parser(
        "delete", help="export a tenant's data as JSON lines, then delete the tenant"
    )
    remove.add_argument("slug")
    remove.add_argument("--export", required=True, help="file for the export (JSON lines)")
    remove.add_argument("--yes", action="store_true", help="confirm the deletion")
    remove.set_defaults(handler=_cmd_tenant_delete)

    sub.add_parser("worker", help="run background jobs (needs SBA_BROKER_URL)").set_defaults(
        handler=_cmd_worker
    )

    dlq = sub.add_parser("dlq", help="jobs that failed on every attempt").add_subparsers(
        dest="dlq", required=True
    )
    dlq_list = dlq.add_parser("list", help="list dead letters, oldest first")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.set_defaults(handler=_cmd_dlq_list)
    dlq_retry = dlq.add_parser("retry", help="queue dead-lettered jobs again, from attempt 1")
    dlq_retry.add_argument("ids", nargs="*")
    dlq_retry.add_argument("--all", action="store_true")
    dlq_retry.set_defaults(handler=_cmd_dlq_retry)
    dlq_drop = dlq.add_parser("drop", help="forget dead letters")
    dlq_drop.add_argument("ids", nargs="+")
    dlq_drop.set_defaults(handler=_cmd_dlq_drop)

    audit = sub.add_parser("audit", help="tenants' audit trails").add_subparsers(
        dest="audit", required=True
    )
    verify = audit.add_parser("verify", help="check every entry's hash chain; exit 1 if broken")
    verify.add_argument("--tenant", default=None, help="one tenant's slug (default: all)")
    verify.set_defaults(handler=_cmd_audit_verify)
    export = audit.add_parser("export", help="a tenant's trail as JSON lines")
    export.add_argument("--tenant", required=True, help="tenant slug")
    export.add_argument("--out", default=None, help="file to write (default: standard output)")
    export.set_defaults(handler=_cmd_audit_export)

    apikey = sub.add_parser("apikey", help="API keys").add_subparsers(dest="apikey", required=True)
    key = apikey.add_parser("create", help="create an API key; prints it on the last line")
    key.add_argument("--tenant", required=True, help="tenant slug")
    key.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    key.add_argument(
        "--expires-in-days", type=float, default=None, help="default: the key does not expire"
    )
    key.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        help="limit the key to this work (repeat for several); default: all its role allows",
    )
    key.set_defaults(handler=_cmd_apikey_create)
    revoke = apikey.add_parser("revoke", help="revoke an API key at once")
    revoke.add_argument("--tenant", required=True, help="tenant slug")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_cmd_apikey_revoke)
    add_chat_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"sba: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, json=settings.log.json)
    try:
        code = int(args.handler(settings, args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader stopped early (`sba dlq list | head`): it has what it wanted. Whatever is
        # still buffered goes nowhere, so the exit does not fail on it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ApplicationError, DomainError) as exc:
        print(f"sba: {exc.message}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"sba: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
