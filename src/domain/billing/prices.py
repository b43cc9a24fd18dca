"""What tokens cost: a price per million input and output tokens for each model (by its name
in the model chain), in one currency. Costs are exact decimals, rounded to a millionth only
when shown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from domain.errors import InvariantViolated

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input_per_million: Decimal
    output_per_million: Decimal

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise InvariantViolated("a token price cannot be negative")

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / MILLION


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price] = field(default_factory=dict)
    currency: str = "USD"

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        """None when the model has no price (an offline or unlisted model)."""
        price = self.prices.get(model)
        return None if price is None else price.cost(input_tokens, output_tokens)
