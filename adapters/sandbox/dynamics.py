"""How the world moves: each change mutates the shared world and returns the event that reports it.

Changes are chosen so the world stays plausible for as long as the sandbox runs: zone moves form a
Markov chain whose stationary mix is 60/30/10, so the mix reverts rather than wanders; the PMS funds
approved loans while the portfolio is at or below its starting size and retires loans above it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from adapters.sandbox.synthetic import LoanFactory
from adapters.sandbox.systems import System
from adapters.sandbox.views import Views
from adapters.sandbox.world import (
    INTEREST_RATE,
    MAX_APPROVED_LTV,
    ORIGINATION_FEE_RATE,
    PIPELINE_LIMIT,
    TERM_YEARS,
    ZONE_TICKET_LIMITS,
    LoanStatus,
    World,
    Zone,
)

# Move probabilities of a property picked at random. Detailed balance holds for the mix 60/30/10:
# 0.6 * 0.25 = 0.3 * 0.5 (green<->orange) and 0.3 * 1/6 = 0.1 * 0.5 (orange<->red).
ZONE_MOVES: dict[Zone, tuple[tuple[Zone, float], ...]] = {
    Zone.GREEN: ((Zone.ORANGE, 0.25),),
    Zone.ORANGE: ((Zone.GREEN, 0.5), (Zone.RED, 1 / 6)),
    Zone.RED: ((Zone.ORANGE, 0.5),),
}
DOWNGRADE_REASONS = (
    "Market conditions deteriorated",
    "Days on market rising in the suburb",
    "Price momentum turned negative",
    "Liquidity score fell below the zone threshold",
)
UPGRADE_REASONS = (
    "Market conditions improved",
    "Sustained price growth in the suburb",
    "Liquidity score recovered",
    "Suburb risk score decreased",
)

EventData = dict[str, Any]


class WorldDynamics:
    def __init__(self, world: World, seed: int, views: Views):
        self._world = world
        self._views = views
        self._rng = random.Random(f"dynamics:{seed}")
        self._factory = LoanFactory(self._rng)
        self._changes: dict[str, Callable[[], EventData | None]] = {
            "zone_classification_updated": self.reclassify_zone,
            "market_risk_updated": self.shift_market_risk,
            "portfolio_updated": self.change_portfolio,
            "metrics_updated": self.update_metrics,
            "loan_application_submitted": self.submit_application,
            "loan_approved": self.approve_application,
        }

    def happen(self, event: str) -> EventData | None:
        """Make the change ``event`` reports, or None when the world has nothing to change that way
        (e.g. no application awaits approval). Raises KeyError for an unknown event type."""
        return self._changes[event]()

    def happen_somehow(self, system: System) -> tuple[str, EventData] | None:
        """Make one change of ``system``'s, chosen at random among those currently possible."""
        events = list(system.events)
        self._rng.shuffle(events)
        for event in events:
            data = self.happen(event)
            if data is not None:
                return event, data
        return None

    def reclassify_zone(self) -> EventData | None:
        candidates = [loan.property for loan in self._world.portfolio.loans.values()]
        candidates += [self._world.loans[loan_id].property for loan_id in self._world.submitted]
        if not candidates:
            return None
        while True:
            prop = self._rng.choice(candidates)
            new_zone = self._draw_move(prop.zone)
            if new_zone is not None:
                break
        old_zone, prop.zone = prop.zone, new_zone
        downgrade = list(Zone).index(new_zone) > list(Zone).index(old_zone)
        reason = self._rng.choice(DOWNGRADE_REASONS if downgrade else UPGRADE_REASONS)
        return {
            "property_id": prop.id,
            "old_zone": old_zone.value,
            "new_zone": new_zone.value,
            "reason": reason,
        }

    def _draw_move(self, zone: Zone) -> Zone | None:
        draw = self._rng.random()
        for target, probability in ZONE_MOVES[zone]:
            if draw < probability:
                return target
            draw -= probability
        return None

    def shift_market_risk(self) -> EventData:
        region = self._rng.choice(list(self._world.regions.values()))
        old_level = region.risk_level
        region.risk_score = round(min(10.0, max(0.0, region.risk_score + self._rng.gauss(0, 0.8))), 1)
        return {
            "region_id": region.id,
            "old_risk_level": old_level.value,
            "new_risk_level": region.risk_level.value,
            "risk_score": region.risk_score,
            "appreciation_forecast": region.appreciation_forecast,
        }

    def change_portfolio(self) -> EventData | None:
        """Fund the oldest approved loan while the portfolio is at or below its target size, else let
        a random loan exit early."""
        world = self._world
        if world.approved and len(world.portfolio.loans) <= world.portfolio_target_size:
            loan, update_type = world.fund_next(), "loan_added"
        elif world.portfolio.loans:
            loan, update_type = world.exit_loan(self._rng.choice(list(world.portfolio.loans))), "loan_exited"
        else:
            return None
        return {
            "portfolio_id": world.portfolio.id,
            "update_type": update_type,
            "loan": self._views.loan_summary(loan),
        }

    def update_metrics(self) -> EventData:
        metrics = self._world.portfolio.metrics
        metrics["irr"] = round(metrics["irr"] + self._rng.gauss(0, 0.002), 4)
        metrics["equity_multiple"] = round(max(0.0, metrics["equity_multiple"] + self._rng.gauss(0, 0.02)), 3)
        metrics["roi"] = round(metrics["equity_multiple"] - 1, 3)
        reported = {name: metrics[name] for name in ("irr", "equity_multiple", "roi")}
        return {"portfolio_id": self._world.portfolio.id, "metrics": reported}

    def submit_application(self) -> EventData | None:
        world = self._world
        if len(world.submitted) >= PIPELINE_LIMIT:
            return None
        loan = self._factory.loan(
            world.next_loan_number, self._factory.random_zone(), LoanStatus.SUBMITTED, world.current_year
        )
        world.next_loan_number += 1
        world.add_loan(loan)
        return {
            "loan_id": loan.id,
            "property_value": loan.property.value,
            "requested_loan_amount": loan.requested_amount,
            "property_zone": loan.property.zone.value,
        }

    def approve_application(self) -> EventData | None:
        """Approve the oldest application, capped by its zone's ticket limit and the maximum LTV."""
        world = self._world
        if not world.submitted:
            return None
        applicant = world.loans[world.submitted[0]]
        ltv_cap = int(MAX_APPROVED_LTV * applicant.property.value) // 1_000 * 1_000
        ticket_limit = ZONE_TICKET_LIMITS[applicant.property.zone]
        loan = world.approve_next(min(applicant.requested_amount, ticket_limit, ltv_cap))
        return {
            "loan_id": loan.id,
            "approved_loan_amount": loan.amount,
            "approved_ltv": loan.ltv,
            "terms": {
                "interest_rate": INTEREST_RATE,
                "term": TERM_YEARS,
                "origination_fee": round(loan.amount * ORIGINATION_FEE_RATE),
            },
        }
