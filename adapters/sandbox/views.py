"""The guide's JSON shapes of world objects, shared by the REST endpoints and the events.

With the ``loan_links`` extension a portfolio loan also carries ``property_id`` and ``region``: the guide
gives no other way to link a PMS loan to the Traffic Light System's property and region ids. REST items
lack the optional fields ``Omissions`` picks for them.
"""

from __future__ import annotations

from typing import Any

from adapters.sandbox.omissions import Omissions
from adapters.sandbox.world import Loan, Portfolio, Region


class Views:
    def __init__(self, omissions: Omissions, *, loan_links: bool):
        self._omissions = omissions
        self._loan_links = loan_links

    def loan_summary(self, loan: Loan) -> dict[str, Any]:
        """A loan as the PMS ``portfolio_updated`` event shows it."""
        summary: dict[str, Any] = {
            "id": loan.id,
            "loan_amount": loan.amount,
            "property_value": loan.property.value,
            "ltv": loan.ltv,
            "zone": loan.property.zone.value,
        }
        if self._loan_links:
            summary |= {"property_id": loan.property.id, "region": loan.property.region_id}
        return summary

    def composition_loan(self, loan: Loan) -> dict[str, Any]:
        full = {
            **self.loan_summary(loan),
            "appreciation_rate": loan.property.appreciation_rate,
            "origination_year": loan.origination_year,
            "exit_year": loan.exit_year,
        }
        return self._omissions.item("composition_loan", loan.id, full)

    def composition(self, portfolio: Portfolio) -> dict[str, Any]:
        """``average_ltv`` is total loans over total value; the appreciation rate is weighted by value."""
        loans = list(portfolio.loans.values())
        total_value = sum(loan.property.value for loan in loans)
        total_amount = sum(loan.amount for loan in loans)
        weighted_growth = sum(loan.property.value * loan.property.appreciation_rate for loan in loans)
        return {
            "portfolio_id": portfolio.id,
            "loans": [self.composition_loan(loan) for loan in loans],
            "metrics": {
                "total_initial_value": total_value,
                "total_loan_amount": total_amount,
                "average_ltv": round(total_amount / total_value, 4) if total_value else 0.0,
                "weighted_appreciation_rate": round(weighted_growth / total_value, 4) if total_value else 0.0,
            },
        }

    def performance(self, portfolio: Portfolio) -> dict[str, Any]:
        full = {
            "portfolio_id": portfolio.id,
            "metrics": dict(portfolio.metrics),
            "historical_performance": [dict(period) for period in portfolio.historical_performance],
        }
        return self._omissions.item("performance", portfolio.id, full)

    def loan_parameters(self, loan: Loan) -> dict[str, Any]:
        full = {
            "loan_id": loan.id,
            "property_value": loan.property.value,
            "requested_loan_amount": loan.requested_amount,
            "requested_ltv": loan.requested_ltv,
            "property_zone": loan.property.zone.value,
            "property_region": loan.property.region_id,
            "borrower_credit_score": loan.borrower_credit_score,
            "property_type": loan.property.property_type,
        }
        return self._omissions.item("loan_parameters", loan.id, full)

    def market_risk(self, region: Region) -> dict[str, Any]:
        full = {
            "risk_level": region.risk_level.value,
            "risk_score": region.risk_score,
            "appreciation_forecast": region.appreciation_forecast,
        }
        return self._omissions.item("market_risk", region.id, full)
