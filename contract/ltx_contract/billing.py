"""Billing: one definition used by the trainer, the operator and the CLI."""

from __future__ import annotations

from decimal import Decimal

#: A successful run bills at least this many units.
MIN_BILLABLE_UNITS = 100
#: Price per billable unit in dollars (0.0061 × 1000 steps = $6.10).
DEFAULT_PRICE_PER_UNIT = Decimal("0.0061")


def billable_units(number_of_steps: int, *, succeeded: bool) -> int:
    """Units a run bills: max(100, steps) when it succeeds, 0 when it fails before
    training completes (invalid input, download failure, rejected dataset)."""
    return max(MIN_BILLABLE_UNITS, number_of_steps) if succeeded else 0


def cost(units: int, price_per_unit: Decimal | str | float = DEFAULT_PRICE_PER_UNIT) -> Decimal:
    """Dollar cost of `units`, rounded to the cent."""
    return (Decimal(units) * Decimal(str(price_per_unit))).quantize(Decimal("0.01"))
