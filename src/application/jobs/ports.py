"""Ports of background work."""

from __future__ import annotations

from typing import Protocol

from domain.jobs.model import DeadLetter, Job


class JobQueue(Protocol):
    """Hands jobs to workers. When ``enqueue`` returns the job is durable in the broker (or,
    in-process, already run). Delivery is at least once: a job whose worker dies before
    finishing is delivered again, so handlers make their effect idempotent by the job's key.
    Raises ``ServiceUnavailable`` when the broker cannot take it."""

    async def enqueue(self, job: Job) -> None: ...

    async def enqueue_later(self, job: Job, delay_ms: int) -> None:
        """Enqueues ``job`` after ``delay_ms``; when this returns, the job will be delivered
        even if this process dies during the delay."""
        ...


class DeadLetterStore(Protocol):
    """Jobs that failed on every attempt, across tenants (an operator's view). ``add`` is
    durable when it returns and replaces a letter with the same id; a letter stays until
    ``remove``."""

    async def add(self, letter: DeadLetter) -> None: ...

    async def list(self, *, limit: int) -> list[DeadLetter]:
        """Oldest first."""
        ...

    async def get(self, letter_id: str) -> DeadLetter | None: ...

    async def remove(self, letter_id: str) -> bool: ...

    async def count(self) -> int: ...


class JobHandler(Protocol):
    """Carries out one kind of job. Raising means the attempt failed (it is retried); a job
    that can never succeed (its subject is gone) returns normally."""

    async def __call__(self, job: Job) -> None: ...
