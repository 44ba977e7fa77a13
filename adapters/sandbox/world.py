"""The synthetic world the three systems share: regions, properties, loans and one portfolio.

One object model backs all three systems, so what one system reports the others agree with: a zone
the Traffic Light System reclassifies is the zone the PMS reports for the loan on that property, and a
loan the Underwriting System approves is the loan the PMS later adds to the portfolio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Zone(StrEnum):
    GREEN = "green"
    ORANGE = "orange"
    RED = "red"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LoanStatus(StrEnum):
    SUBMITTED = "submitted"  # an application the Underwriting System has not decided yet
    APPROVED = "approved"  # approved, waiting for the PMS to fund it into the portfolio
    ACTIVE = "active"  # in the portfolio
    EXITED = "exited"  # left the portfolio


# Annual appreciation band per zone, from the TLS mock table (domain.md section 1.7).
ZONE_APPRECIATION_BANDS: dict[Zone, tuple[float, float]] = {
    Zone.GREEN: (0.050, 0.060),
    Zone.ORANGE: (0.042, 0.045),
    Zone.RED: (0.035, 0.038),
}

# Largest loan the Underwriting System approves per zone, and the LTV it never exceeds.
ZONE_TICKET_LIMITS: dict[Zone, int] = {Zone.GREEN: 500_000, Zone.ORANGE: 400_000, Zone.RED: 300_000}
MAX_APPROVED_LTV = 0.65
INTEREST_RATE = 0.05
TERM_YEARS = 10
ORIGINATION_FEE_RATE = 0.03


@dataclass
class Region:
    id: str
    risk_score: float  # 0 (safest) .. 10

    @property
    def risk_level(self) -> RiskLevel:
        if self.risk_score < 3.5:
            return RiskLevel.LOW
        if self.risk_score < 6.5:
            return RiskLevel.MEDIUM
        return RiskLevel.HIGH

    @property
    def appreciation_forecast(self) -> float:
        return round(max(0.0, 0.062 - 0.0055 * self.risk_score), 4)


@dataclass
class Property:
    id: str
    region_id: str
    zone: Zone
    value: int
    property_type: str
    growth_position: float  # where in its zone's appreciation band this property sits, 0..1

    @property
    def appreciation_rate(self) -> float:
        low, high = ZONE_APPRECIATION_BANDS[self.zone]
        return round(low + self.growth_position * (high - low), 4)


@dataclass
class Loan:
    id: str
    property: Property
    requested_amount: int
    amount: int  # the requested amount until approval, the approved amount after
    borrower_credit_score: int
    origination_year: int
    exit_year: int
    status: LoanStatus

    @property
    def ltv(self) -> float:
        return round(self.amount / self.property.value, 4)

    @property
    def requested_ltv(self) -> float:
        return round(self.requested_amount / self.property.value, 4)


@dataclass
class Portfolio:
    id: str
    loans: dict[str, Loan]  # active loans, in the order they joined
    metrics: dict[str, float]  # irr, equity_multiple, roi, sharpe_ratio, sortino_ratio, var_95
    historical_performance: list[dict[str, float | str]]


PIPELINE_LIMIT = 100  # most applications awaiting a decision, and most approved loans awaiting funding


@dataclass
class World:
    regions: dict[str, Region]
    properties: dict[str, Property]  # properties of loans the world still tracks
    loans: dict[str, Loan]  # applications, approved and active loans; exited and lapsed loans are forgotten
    portfolio: Portfolio
    portfolio_target_size: int  # the PMS keeps the portfolio near its starting size
    current_year: int
    next_loan_number: int
    submitted: deque[str] = field(default_factory=deque)  # applications awaiting a decision, oldest first
    approved: deque[str] = field(default_factory=deque)  # approved loans awaiting funding, oldest first

    def portfolio_named(self, portfolio_id: str) -> Portfolio | None:
        return self.portfolio if portfolio_id == self.portfolio.id else None

    def add_loan(self, loan: Loan) -> None:
        self.loans[loan.id] = loan
        self.properties[loan.property.id] = loan.property
        if loan.status is LoanStatus.SUBMITTED:
            self.submitted.append(loan.id)
        elif loan.status is LoanStatus.ACTIVE:
            self.portfolio.loans[loan.id] = loan

    def approve_next(self, amount: int) -> Loan:
        """Approve the oldest application for ``amount``.

        Past PIPELINE_LIMIT approvals awaiting funding, the oldest one lapses."""
        loan = self.loans[self.submitted.popleft()]
        loan.amount = amount
        loan.status = LoanStatus.APPROVED
        self.approved.append(loan.id)
        if len(self.approved) > PIPELINE_LIMIT:
            self._forget(self.loans[self.approved.popleft()])
        return loan

    def fund_next(self) -> Loan:
        loan = self.loans[self.approved.popleft()]
        loan.status = LoanStatus.ACTIVE
        self.portfolio.loans[loan.id] = loan
        return loan

    def exit_loan(self, loan_id: str) -> Loan:
        loan = self.portfolio.loans.pop(loan_id)
        loan.status = LoanStatus.EXITED
        self._forget(loan)
        return loan

    def zone_counts(self) -> dict[Zone, int]:
        counts = dict.fromkeys(Zone, 0)
        for loan in self.portfolio.loans.values():
            counts[loan.property.zone] += 1
        return counts

    def _forget(self, loan: Loan) -> None:
        """Drop a loan that left the pipeline, so a long run holds a bounded world."""
        del self.loans[loan.id]
        del self.properties[loan.property.id]
