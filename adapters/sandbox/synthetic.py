"""Deterministic synthetic data: the world at start, and new loans as the world moves on.

Distributions follow domain.md section 9.3 (recommended column): loan size ~ N(250k, 50k) within
100k-500k, advance LTV ~ N(0.40, 0.10) within 0.15-0.65, property value = loan / LTV, zones in exact
60/30/10 proportions, appreciation within the TLS band of the zone (section 1.7).
"""

from __future__ import annotations

import random
from datetime import date

from adapters.sandbox.config import SandboxConfig
from adapters.sandbox.world import TERM_YEARS, Loan, LoanStatus, Portfolio, Property, Region, World, Zone

# The engine's default regions (simulation/config.py), so a book from the sandbox needs no region mapping.
REGION_IDS = ("sydney_north", "sydney_east", "sydney_west", "sydney_south")
PROPERTY_TYPES = ("single_family", "townhouse", "apartment", "duplex")
PROPERTY_TYPE_WEIGHTS = (0.65, 0.15, 0.15, 0.05)
ZONE_SHARES = {Zone.GREEN: 0.6, Zone.ORANGE: 0.3, Zone.RED: 0.1}
CURRENT_YEAR = 3  # fund age in years: the initial loans originated in years 0..3
FUND_INCEPTION = date(2023, 1, 1)
HISTORY_MONTHS = 36


class LoanFactory:
    """Draws new loans and their properties from the section 9.3 distributions."""

    def __init__(self, rng: random.Random):
        self._rng = rng

    def random_zone(self) -> Zone:
        return self._rng.choices(list(ZONE_SHARES), weights=list(ZONE_SHARES.values()))[0]

    def loan(self, number: int, zone: Zone, status: LoanStatus, origination_year: int) -> Loan:
        amount = _round_to(self._truncated_normal(250_000, 50_000, 100_000, 500_000), 1_000)
        ltv = self._truncated_normal(0.40, 0.10, 0.15, 0.65)
        holding_years = round(self._truncated_normal(6, 2, 1, TERM_YEARS))
        return Loan(
            id=f"loan_{number}",
            property=self._property(number, zone, value=_round_to(amount / ltv, 1_000)),
            requested_amount=amount,
            amount=amount,
            borrower_credit_score=round(self._truncated_normal(740, 45, 580, 850)),
            origination_year=origination_year,
            exit_year=min(origination_year + holding_years, TERM_YEARS),
            status=status,
        )

    def _property(self, number: int, zone: Zone, value: float) -> Property:
        return Property(
            id=f"property_{number}",
            region_id=self._rng.choice(REGION_IDS),
            zone=zone,
            value=value,
            property_type=self._rng.choices(PROPERTY_TYPES, weights=PROPERTY_TYPE_WEIGHTS)[0],
            growth_position=self._rng.random(),
        )

    def _truncated_normal(self, mean: float, sd: float, low: float, high: float) -> float:
        while True:
            draw = self._rng.gauss(mean, sd)
            if low <= draw <= high:
                return draw


def generate_world(config: SandboxConfig) -> World:
    """The world at start; the same config always gives the same world."""
    rng = random.Random(f"world:{config.seed}")
    factory = LoanFactory(rng)
    regions = {region_id: Region(region_id, round(rng.uniform(1.5, 8.0), 1)) for region_id in REGION_IDS}

    zones = _exact_zone_mix(config.loan_count)
    rng.shuffle(zones)
    active = [
        factory.loan(number, zone, LoanStatus.ACTIVE, origination_year=rng.randint(0, CURRENT_YEAR))
        for number, zone in enumerate(zones, start=1)
    ]
    first_application = config.loan_count + 1
    applications = [
        factory.loan(number, factory.random_zone(), LoanStatus.SUBMITTED, origination_year=CURRENT_YEAR)
        for number in range(first_application, first_application + config.application_count)
    ]
    metrics = _initial_metrics(rng)
    committed = sum(loan.amount for loan in active)
    world = World(
        regions=regions,
        properties={},
        loans={},
        portfolio=Portfolio(
            id=config.portfolio_id,
            loans={},
            metrics=metrics,
            historical_performance=_monthly_history(rng, committed, metrics["irr"]),
        ),
        portfolio_target_size=config.loan_count,
        current_year=CURRENT_YEAR,
        next_loan_number=first_application + config.application_count,
    )
    for loan in active + applications:
        world.add_loan(loan)
    return world


def _exact_zone_mix(count: int) -> list[Zone]:
    greens = round(count * ZONE_SHARES[Zone.GREEN])
    oranges = round(count * ZONE_SHARES[Zone.ORANGE])
    return [Zone.GREEN] * greens + [Zone.ORANGE] * oranges + [Zone.RED] * (count - greens - oranges)


def _initial_metrics(rng: random.Random) -> dict[str, float]:
    equity_multiple = round(rng.gauss(2.1, 0.1), 3)
    return {
        "irr": round(rng.gauss(0.12, 0.01), 4),
        "equity_multiple": equity_multiple,
        "roi": round(equity_multiple - 1, 3),
        "sharpe_ratio": round(rng.gauss(1.5, 0.1), 2),
        "sortino_ratio": round(rng.gauss(2.2, 0.15), 2),
        "var_95": round(rng.gauss(0.08, 0.005), 4),
    }


def _monthly_history(rng: random.Random, committed: float, irr: float) -> list[dict[str, float | str]]:
    """Capital called in four quarterly calls, NAV compounding at about the IRR, distributions from year 2."""
    nav = 0.0
    history: list[dict[str, float | str]] = []
    for month in range(HISTORY_MONTHS):
        contributions = round(committed / 4) if month in (0, 3, 6, 9) else 0
        distributions = round(nav * 0.005) if month >= 24 else 0
        nav = nav * (1 + irr / 12 + rng.gauss(0, 0.004)) + contributions - distributions
        day = date(FUND_INCEPTION.year + month // 12, month % 12 + 1, 1)
        history.append(
            {
                "date": day.isoformat(),
                "nav": round(nav),
                "distributions": distributions,
                "contributions": contributions,
            }
        )
    return history


def _round_to(value: float, step: int) -> int:
    return round(value / step) * step
