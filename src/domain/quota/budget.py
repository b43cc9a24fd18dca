"""Token budgets: per tenant per period (a UTC day or calendar month), a soft limit that warns
and a hard limit that refuses new runs. Usage is what runs actually consumed (input plus output
tokens, charged once, when each run ends)."""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from domain.errors import InvariantViolated

DAY_MS = 86_400_000


class BudgetPeriod(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


class BudgetState(enum.StrEnum):
    OK = "ok"
    SOFT = "soft"  # at or over the soft limit: runs go on, with a warning
    HARD = "hard"  # at or over the hard limit: new runs are refused until the period ends


def period_bounds(period: BudgetPeriod, now_ms: int) -> tuple[int, int]:
    """[start, end) in ms of the period holding ``now_ms``, in UTC."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if period is BudgetPeriod.DAY:
        start = now_ms - now_ms % DAY_MS
        return start, start + DAY_MS
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    start = int(first.timestamp() * 1000)
    return start, start + days * DAY_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBudget:
    """0 turns a limit off."""

    period: BudgetPeriod = BudgetPeriod.MONTH
    soft_tokens: int = 0
    hard_tokens: int = 0

    def __post_init__(self) -> None:
        if self.soft_tokens < 0 or self.hard_tokens < 0:
            raise InvariantViolated("token budgets cannot be negative")
        if self.soft_tokens and self.hard_tokens and self.soft_tokens > self.hard_tokens:
            raise InvariantViolated("a soft token budget cannot exceed the hard one")

    @property
    def enabled(self) -> bool:
        return bool(self.soft_tokens or self.hard_tokens)

    def state(self, used_tokens: int) -> BudgetState:
        if self.hard_tokens and used_tokens >= self.hard_tokens:
            return BudgetState.HARD
        if self.soft_tokens and used_tokens >= self.soft_tokens:
            return BudgetState.SOFT
        return BudgetState.OK


def utc_day(day_number: int) -> str:
    """``YYYY-MM-DD`` of a day counted from the epoch (``ms // DAY_MS``)."""
    return datetime.fromtimestamp(day_number * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")
