"""In-memory dead letters and render jobs: the test doubles of the SQL stores. Render jobs
audit through a unit of work (a private one by default), committed with the change."""

from __future__ import annotations

import copy

from adapters.memory.persistence import MemoryUnitOfWork
from application.errors import Conflict, NotFound
from application.ports import UnitOfWork
from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.jobs.model import DeadLetter
from domain.render.model import RenderJob


class MemoryDeadLetterStore:
    def __init__(self) -> None:
        self._letters: dict[str, DeadLetter] = {}

    async def add(self, letter: DeadLetter) -> None:
        self._letters[letter.id] = letter

    async def list(self, *, limit: int) -> list[DeadLetter]:
        return sorted(self._letters.values(), key=lambda d: (d.failed_at_ms, d.id))[:limit]

    async def get(self, letter_id: str) -> DeadLetter | None:
        return self._letters.get(letter_id)

    async def remove(self, letter_id: str) -> bool:
        return self._letters.pop(letter_id, None) is not None

    async def count(self) -> int:
        return len(self._letters)


class MemoryRenderJobRepository:
    def __init__(self, uow: UnitOfWork | None = None) -> None:
        self._jobs: dict[tuple[TenantId, str], RenderJob] = {}
        self._uow: UnitOfWork = uow if uow is not None else MemoryUnitOfWork()

    async def add(self, job: RenderJob, *, audit: AuditEvent) -> None:
        key = (job.tenant_id, job.id)
        if key in self._jobs:
            raise Conflict(f"render {job.id} exists")
        async with self._uow.transaction(job.tenant_id) as tx:
            await tx.audit.append(job.tenant_id, audit, at_ms=job.created_at_ms)
            self._jobs[key] = copy.deepcopy(job)
            await tx.commit()

    async def get(self, tenant_id: TenantId, render_id: str) -> RenderJob | None:
        job = self._jobs.get((tenant_id, render_id))
        return copy.deepcopy(job) if job else None

    async def save(self, job: RenderJob, *, audit: AuditEvent | None = None) -> None:
        key = (job.tenant_id, job.id)
        if key not in self._jobs:
            raise NotFound(f"no render {job.id}")
        async with self._uow.transaction(job.tenant_id) as tx:
            if audit is not None:
                await tx.audit.append(job.tenant_id, audit, at_ms=job.updated_at_ms)
            self._jobs[key] = copy.deepcopy(job)
            await tx.commit()
