"""Port of usage metering to a billing provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterEvent:
    """One usage record for the provider. ``identifier`` is fixed by what it counts (one run),
    so reporting it again is recognised as the same event."""

    identifier: str
    customer: str
    value: int
    timestamp_s: int


class MeterReporter(Protocol):
    """Sends meter events. Raises ``ServiceUnavailable`` when the provider could not take it
    (it is retried), ``InvalidInput`` when it refused it (retrying cannot help)."""

    async def report(self, event: MeterEvent) -> None: ...
