"""The request bodies the engine POSTs, as the integration guide's examples define them.

Checks are strict so a mistake in our own adapters shows up here rather than in production: unknown
fields are refused, numbers must be JSON numbers, shares lie in [0, 1], and allocations sum to 1
(within ALLOCATION_TOLERANCE). Metric maps accept any metric name with a number.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.sandbox.world import Zone

ALLOCATION_TOLERANCE = 0.01

Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Identifier = Annotated[str, Field(min_length=1)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _require_whole(shares: dict[str, float], what: str) -> None:
    total = sum(shares.values())
    if abs(total - 1) > ALLOCATION_TOLERANCE:
        raise ValueError(f"{what} must sum to 1, got {total:.4f}")


# Traffic Light System: POST /api/traffic-light/recommendations


class ZoneAllocationRecommendations(_Payload):
    green_zone_allocation: Share
    orange_zone_allocation: Share
    red_zone_allocation: Share
    region_allocations: dict[str, Share]

    @model_validator(mode="after")
    def _allocations_are_whole(self) -> Self:
        zones = {
            "green": self.green_zone_allocation,
            "orange": self.orange_zone_allocation,
            "red": self.red_zone_allocation,
        }
        _require_whole(zones, "zone allocations")
        if self.region_allocations:
            _require_whole(self.region_allocations, "region_allocations")
        return self


class AllocationRecommendation(_Payload):
    portfolio_id: Identifier
    recommendations: ZoneAllocationRecommendations


# Portfolio Management System: POST /api/pms/portfolios/{portfolio_id}/recommendations


class TargetAllocation(_Payload):
    green: Share
    orange: Share
    red: Share

    @model_validator(mode="after")
    def _is_whole(self) -> Self:
        _require_whole({"green": self.green, "orange": self.orange, "red": self.red}, "target_allocation")
        return self


class ActionType(StrEnum):
    INCREASE_ALLOCATION = "increase_allocation"
    DECREASE_ALLOCATION = "decrease_allocation"


class AllocationAction(_Payload):
    action_type: ActionType
    zone: Zone
    amount: Amount


class OptimizationRecommendations(_Payload):
    target_allocation: TargetAllocation
    expected_metrics: dict[str, Number]
    actions: list[AllocationAction]


class OptimizationRecommendation(_Payload):
    optimization_id: Identifier
    recommendations: OptimizationRecommendations


# Underwriting System: POST /api/underwriting/loans/{loan_id}/portfolio-impact


class RiskImpact(_Payload):
    var_change: Number
    concentration_risk_change: Number
    diversification_benefit: Number


class LoanRecommendation(_Payload):
    approve: bool
    recommended_loan_amount: Amount
    recommended_ltv: Share
    confidence_score: Share


class PortfolioImpact(_Payload):
    portfolio_metrics_before: dict[str, Number]
    portfolio_metrics_after: dict[str, Number]
    risk_impact: RiskImpact
    recommendation: LoanRecommendation


class PortfolioImpactAnalysis(_Payload):
    analysis_id: Identifier
    portfolio_id: Identifier
    impact: PortfolioImpact
