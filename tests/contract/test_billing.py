"""Billing: max(100, steps) units on success, 0 on failure; cost at 0.0061 per unit."""

from decimal import Decimal

import pytest

from ltx_contract.billing import billable_units, cost


@pytest.mark.parametrize(("steps", "units"), [(1, 100), (99, 100), (100, 100), (101, 101),
                                              (1000, 1000), (2000, 2000), (20000, 20000)])
def test_success_bills_at_least_100_units(steps, units):
    assert billable_units(steps, succeeded=True) == units


@pytest.mark.parametrize("steps", [100, 2000, 20000])
def test_failure_bills_nothing(steps):
    assert billable_units(steps, succeeded=False) == 0


def test_cost_follows_the_reference_formula():
    assert cost(1000) == Decimal("6.10")  # "With 1000 steps, your request will cost $6.10."
    assert cost(100) == Decimal("0.61")
    assert cost(0) == Decimal("0.00")
    assert cost(1000, price_per_unit="0.01") == Decimal("10.00")
