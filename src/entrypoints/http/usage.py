"""A tenant's token usage per day, and where it stands against its budget."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import get
from litestar.params import QueryParameter

from application.errors import InvalidInput
from application.quota.use_cases import GetUsage, UsageLine
from domain.quota.budget import DAY_MS
from domain.tenancy.model import Principal


class LineOut(msgspec.Struct, rename="camel", kw_only=True):
    runs: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    # In the price table's currency; null when no price is known for any of it.
    cost: float | None


class DayOut(LineOut, kw_only=True):
    day: str


class ModelOut(LineOut, kw_only=True):
    model: str


class UsageOut(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    since: str
    until: str
    currency: str
    days: list[DayOut]
    models: list[ModelOut]
    total: LineOut
    budget: dict[str, Any] | None = None


def _line(line: UsageLine) -> dict[str, Any]:
    return {
        "runs": line.runs,
        "input_tokens": line.input_tokens,
        "output_tokens": line.output_tokens,
        "total_tokens": line.input_tokens + line.output_tokens,
        "cost": round(float(line.cost), 6) if line.cost is not None else None,
    }


def _day_ms(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a date like 2026-11-25") from exc
    return int(parsed.timestamp() * 1000)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


@get(
    "/v1/usage",
    tags=["usage"],
    summary="Token usage per UTC day (default: this month) and the token budget's state",
)
@inject
async def usage(
    principal: FromDishka[Principal],
    get_usage: FromDishka[GetUsage],
    since: Annotated[str | None, QueryParameter(name="from")] = None,
    until: Annotated[str | None, QueryParameter(name="to", description="inclusive")] = None,
) -> UsageOut:
    until_ms = _day_ms(until, "to")
    report = await get_usage(
        principal, _day_ms(since, "from"), until_ms + DAY_MS if until_ms is not None else None
    )
    return UsageOut(
        since=_day(report.since_ms),
        until=_day(report.until_ms - 1),
        currency=report.prices.currency,
        days=[DayOut(day=d.key, **_line(d)) for d in report.days],
        models=[ModelOut(model=m.key, **_line(m)) for m in report.models],
        total=LineOut(**_line(report.total)),
        budget=report.budget.as_dict() if report.budget is not None else None,
    )
