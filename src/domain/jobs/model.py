"""Background jobs: what a job is, and how a failed one is retried."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from domain.errors import InvariantViolated
from domain.ids import TenantId

MAX_ATTEMPTS_LIMIT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One unit of background work. ``key`` names the effect (the same key twice is the same
    work: handlers use it to do the effect once); ``attempt`` counts tries, the first being 1;
    ``trace`` carries the W3C trace context of whoever enqueued it."""

    kind: str
    tenant_id: TenantId
    key: str
    args: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    trace: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind or not self.key:
            raise InvariantViolated("a job needs a kind and a key")
        if self.attempt < 1:
            raise InvariantViolated("a job's attempt counts from 1")

    def next_attempt(self) -> Job:
        return replace(self, attempt=self.attempt + 1)

    def first_attempt(self) -> Job:
        return replace(self, attempt=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits between half and all of
    ``min(cap_ms, base_ms * 2**(n-1))``. Half is fixed so retries never bunch at zero; the
    other half is random so failures that happened together do not retry together."""

    max_attempts: int = 5
    base_ms: int = 500
    cap_ms: int = 60_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvariantViolated(f"max_attempts is 1 to {MAX_ATTEMPTS_LIMIT}")
        if self.base_ms < 0 or self.cap_ms < self.base_ms:
            raise InvariantViolated("0 <= base_ms <= cap_ms")

    def exhausted(self, attempt: int) -> bool:
        """True when a job that failed on ``attempt`` gets no further attempt."""
        return attempt >= self.max_attempts

    def ceiling_ms(self, attempt: int) -> int:
        # Capped before the power grows large: attempt is at most MAX_ATTEMPTS_LIMIT.
        return min(self.cap_ms, self.base_ms << min(attempt - 1, 62))

    def delay_ms(self, attempt: int, unit: float) -> int:
        """The wait before the attempt after ``attempt``; ``unit`` is a random number in
        [0, 1)."""
        if not 0.0 <= unit < 1.0:
            raise InvariantViolated("unit is in [0, 1)")
        ceiling = self.ceiling_ms(max(attempt, 1))
        half = ceiling // 2
        return half + int(unit * (ceiling - half))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A job that failed on every attempt, kept until someone retries or drops it. Its id is
    fixed by the job's kind, tenant and key (``letter_id``), so the same work dead-lettered
    twice (a last attempt delivered again after its worker died) is one letter."""

    id: str
    job: Job
    error: str
    failed_at_ms: int

    @staticmethod
    def letter_id(job: Job) -> str:
        digest = hashlib.sha256(f"{job.kind}\0{job.tenant_id}\0{job.key}".encode()).hexdigest()
        return f"dlq_{digest[:24]}"
