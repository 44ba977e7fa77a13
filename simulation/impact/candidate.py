"""The loan under review, and the book with that loan appended as a new, last slot.

Appending keeps common random numbers: draws are loan-major per path block (``streams``), so a loan in a new
last slot takes the numbers after every existing loan's and leaves theirs, and the market's, untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..book import LoanBook
from ..config import ZONES, SimulationConfig


@dataclass(frozen=True)
class CandidateLoan:
    """An application: amount ``L`` against property value ``V0``, zone and region indices, terms."""

    loan_id: str
    amount: float
    property_value: float
    zone: int  # index into ``ZONES``
    region: int  # index into ``config.book.regions``
    origination_month: int = 0
    interest_rate: float | None = None  # None: ``config.loans.interest_rate``
    appreciation_share: float | None = None  # None: the configured share method

    @property
    def ltv(self) -> float:
        return self.amount / self.property_value

    @property
    def zone_name(self) -> str:
        return ZONES[self.zone]

    def with_amount(self, amount: float) -> CandidateLoan:
        """The same application for another amount at the same property value (a counter-offer)."""
        return dataclasses.replace(self, amount=amount)

    def check(self, config: SimulationConfig) -> None:
        """Raise ``ValueError`` naming the field when the loan does not fit the fund's config."""
        if not 0.0 < self.amount < self.property_value:
            raise ValueError("requested_loan_amount: must lie in (0, property_value)")
        if not 0 <= self.zone < len(ZONES):
            raise ValueError("property_zone: unknown zone")
        if not 0 <= self.region < len(config.book.regions):
            raise ValueError("property_region: not a region of the fund's book")
        if not 0 <= self.origination_month < config.term_months:
            raise ValueError("origination_month: must fall inside the fund term")


def with_candidate(config: SimulationConfig, book: LoanBook, loan: CandidateLoan) -> LoanBook:
    """``book`` plus ``loan`` in a new, last slot."""
    rate = config.loans.interest_rate if loan.interest_rate is None else loan.interest_rate
    share = np.nan if loan.appreciation_share is None else loan.appreciation_share
    return LoanBook(
        ids=(*book.ids, loan.loan_id),
        amount=np.append(book.amount, loan.amount),
        value0=np.append(book.value0, loan.property_value),
        zone=np.append(book.zone, loan.zone),
        region=np.append(book.region, loan.region),
        origination_month=np.append(book.origination_month, loan.origination_month),
        rate=np.append(book.rate, rate),
        share=np.append(book.share, share),
        planned_exit_month=np.append(book.planned_exit_month, -1),
    )
