"""In-memory dead letters and render jobs: the test doubles of the SQL stores."""

from __future__ import annotations

import copy

from application.errors import Conflict, NotFound
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
    def __init__(self) -> None:
        self._jobs: dict[tuple[TenantId, str], RenderJob] = {}

    async def add(self, job: RenderJob) -> None:
        key = (job.tenant_id, job.id)
        if key in self._jobs:
            raise Conflict(f"render {job.id} exists")
        self._jobs[key] = copy.deepcopy(job)

    async def get(self, tenant_id: TenantId, render_id: str) -> RenderJob | None:
        job = self._jobs.get((tenant_id, render_id))
        return copy.deepcopy(job) if job else None

    async def save(self, job: RenderJob) -> None:
        key = (job.tenant_id, job.id)
        if key not in self._jobs:
            raise NotFound(f"no render {job.id}")
        self._jobs[key] = copy.deepcopy(job)
