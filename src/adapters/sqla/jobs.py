"""Dead letters and render jobs on SQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.jobs.codec import decode_job, encode_job
from adapters.scope import AdminScope, TenantScope
from adapters.sqla.audit import SqlaAuditTrail
from adapters.sqla.scope import Database
from adapters.sqla.tables import dead_letters, render_jobs
from application.errors import NotFound
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.jobs.model import DeadLetter
from domain.render.model import RenderFormat, RenderJob, RenderState


class SqlaDeadLetterStore:
    """On the admin path: dead letters are an operator's cross-tenant view."""

    def __init__(self, db: Database, *, actor: str = "system:jobs") -> None:
        self._db = db
        self._actor = actor

    def _scope(self, action: str) -> AdminScope:
        return AdminScope(self._actor, f"dead_letters.{action}")

    async def add(self, letter: DeadLetter) -> None:
        async with self._db.begin(self._scope("add")) as conn:
            # The same work dead-lettered again replaces its letter (latest error and time).
            await conn.execute(delete(dead_letters).where(dead_letters.c.id == letter.id))
            await conn.execute(
                insert(dead_letters).values(
                    id=letter.id,
                    kind=letter.job.kind,
                    tenant_id=letter.job.tenant_id,
                    job_key=letter.job.key,
                    job=encode_job(letter.job),
                    error=letter.error,
                    failed_at_ms=letter.failed_at_ms,
                )
            )

    async def list(self, *, limit: int) -> list[DeadLetter]:
        async with self._db.connect(self._scope("list")) as conn:
            rows = await conn.execute(
                select(dead_letters)
                .order_by(dead_letters.c.failed_at_ms, dead_letters.c.id)
                .limit(limit)
            )
            return [_letter(r) for r in rows]

    async def get(self, letter_id: str) -> DeadLetter | None:
        async with self._db.connect(self._scope("get")) as conn:
            r = (
                await conn.execute(select(dead_letters).where(dead_letters.c.id == letter_id))
            ).first()
            return None if r is None else _letter(r)

    async def remove(self, letter_id: str) -> bool:
        async with self._db.begin(self._scope("remove")) as conn:
            result = await conn.execute(delete(dead_letters).where(dead_letters.c.id == letter_id))
            return bool(result.rowcount)

    async def count(self) -> int:
        async with self._db.connect(self._scope("count")) as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(dead_letters))).scalar_one()
            )


def _letter(r: Any) -> DeadLetter:
    return DeadLetter(id=r.id, job=decode_job(r.job), error=r.error, failed_at_ms=r.failed_at_ms)


class SqlaRenderJobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _trail(self, conn: AsyncConnection, scope: TenantScope) -> SqlaAuditTrail:
        return SqlaAuditTrail(conn, scope, is_postgres=self._db.is_postgres)

    async def add(self, job: RenderJob, *, audit: AuditEvent) -> None:
        scope = TenantScope(job.tenant_id)
        async with self._db.begin(scope) as conn:
            await conn.execute(
                insert(render_jobs).values(tenant_id=job.tenant_id, id=job.id, **_values(job))
            )
            await self._trail(conn, scope).append(job.tenant_id, audit, at_ms=job.created_at_ms)

    async def get(self, tenant_id: TenantId, render_id: str) -> RenderJob | None:
        async with self._db.connect(TenantScope(tenant_id)) as conn:
            r = (
                await conn.execute(
                    select(render_jobs).where(
                        render_jobs.c.tenant_id == tenant_id, render_jobs.c.id == render_id
                    )
                )
            ).first()
        if r is None:
            return None
        return RenderJob(
            id=r.id,
            tenant_id=TenantId(r.tenant_id),
            template=r.template,
            data=json.loads(r.data),
            formats=tuple(RenderFormat(f) for f in r.formats.split(",")),
            requested_by=r.requested_by,
            state=RenderState(r.state),
            attempts=r.attempts,
            error=r.error,
            artifacts=json.loads(r.artifacts),
            created_at_ms=r.created_at_ms,
            updated_at_ms=r.updated_at_ms,
        )

    async def save(self, job: RenderJob, *, audit: AuditEvent | None = None) -> None:
        scope = TenantScope(job.tenant_id)
        async with self._db.begin(scope) as conn:
            result = await conn.execute(
                update(render_jobs)
                .where(render_jobs.c.tenant_id == job.tenant_id, render_jobs.c.id == job.id)
                .values(**_values(job))
            )
            if not result.rowcount:
                raise NotFound(f"no render {job.id}")
            if audit is not None:
                trail = self._trail(conn, scope)
                await trail.append(job.tenant_id, audit, at_ms=job.updated_at_ms)


def _values(job: RenderJob) -> dict[str, Any]:
    return {
        "template": job.template,
        "data": json.dumps(job.data, ensure_ascii=False, default=str),
        "formats": ",".join(f.value for f in job.formats),
        "requested_by": job.requested_by,
        "state": job.state.value,
        "attempts": job.attempts,
        "error": job.error,
        "artifacts": json.dumps(job.artifacts),
        "created_at_ms": job.created_at_ms,
        "updated_at_ms": job.updated_at_ms,
    }
