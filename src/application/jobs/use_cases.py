"""Running jobs: dispatch by kind, retry with backoff and jitter, dead letters."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from application.context import current_tenant
from application.errors import InvalidInput, NotFound
from application.jobs.ports import DeadLetterStore, JobHandler, JobQueue
from application.ports import Clock
from domain.jobs.model import DeadLetter, Job, RetryPolicy

log = logging.getLogger("sba.jobs")

MAX_ERROR = 2000


@dataclass(slots=True)
class JobStats:
    """Counted per process; ``outcomes`` by (job kind, outcome), an unknown kind as
    ``unknown``."""

    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, kind: str, outcome: str) -> None:
        key = (kind, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


class RunJob:
    """Runs one delivery of a job. A failure is retried after a backoff with jitter (the retry
    is in the queue before this returns, so a crash loses nothing); the last failure puts the
    job in the dead-letter store. An unknown kind is dead-lettered at once: retrying cannot
    teach this worker a handler."""

    def __init__(
        self,
        handlers: Mapping[str, JobHandler],
        queue: JobQueue,
        dead_letters: DeadLetterStore,
        clock: Clock,
        policy: RetryPolicy,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._handlers = handlers
        self._queue = queue
        self._dead = dead_letters
        self._clock = clock
        self._policy = policy
        self._rand = rand
        self.stats = JobStats()

    async def __call__(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        if handler is None:
            await self._bury(job, f"no handler for job kind {job.kind!r}", kind="unknown")
            return
        tenant = current_tenant.set(job.tenant_id)
        try:
            await handler(job)
        except Exception as exc:
            await self._failed(job, exc)
            return
        finally:
            current_tenant.reset(tenant)
        self.stats.succeeded += 1
        self.stats.count(job.kind, "succeeded")

    async def _failed(self, job: Job, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if self._policy.exhausted(job.attempt):
            log.error("job %s %s failed on attempt %d, the last", job.kind, job.key, job.attempt)
            await self._bury(job, error)
            return
        delay = self._policy.delay_ms(job.attempt, self._rand())
        log.warning(
            "job %s %s failed on attempt %d (%s); retrying in %d ms",
            job.kind,
            job.key,
            job.attempt,
            error,
            delay,
        )
        self.stats.retried += 1
        self.stats.count(job.kind, "retried")
        await self._queue.enqueue_later(job.next_attempt(), delay)

    async def _bury(self, job: Job, error: str, *, kind: str = "") -> None:
        self.stats.dead_lettered += 1
        self.stats.count(kind or job.kind, "dead_lettered")
        await self._dead.add(
            DeadLetter(
                id=DeadLetter.letter_id(job),
                job=job,
                error=error[:MAX_ERROR],
                failed_at_ms=self._clock.now_ms(),
            )
        )


class ManageDeadLetters:
    """The operator's view of the dead-letter store: list, retry (from the first attempt, with
    the same key, so an effect that did happen is not repeated), drop."""

    def __init__(self, store: DeadLetterStore, queue: JobQueue) -> None:
        self._store = store
        self._queue = queue

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        return await self._store.list(limit=limit)

    async def retry(self, letter_id: str) -> DeadLetter:
        letter = await self._letter(letter_id)
        # Enqueued before removal: a crash between the two leaves a letter to drop, never a
        # lost job.
        await self._queue.enqueue(letter.job.first_attempt())
        await self._store.remove(letter_id)
        return letter

    async def retry_all(self) -> int:
        count = 0
        while letters := await self._store.list(limit=100):
            for letter in letters:
                await self._queue.enqueue(letter.job.first_attempt())
                await self._store.remove(letter.id)
                count += 1
        return count

    async def drop(self, letter_id: str) -> DeadLetter:
        letter = await self._letter(letter_id)
        await self._store.remove(letter_id)
        return letter

    async def _letter(self, letter_id: str) -> DeadLetter:
        letter = await self._store.get(letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id}")
        return letter
