"""Concentration of the book before and after the loan, and the diversification benefit (domain §4.5).

Shares are of the principal of the book (the initial book's loans, as ``aggregate.concentration``), with the
loan's amount added after. HHI = sum of squared shares, for zones, regions and single loans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..book import LoanBook
from ..config import ZONES
from .candidate import CandidateLoan


@dataclass(frozen=True)
class Concentration:
    zone_hhi: float
    region_hhi: float
    loan_hhi: float
    top5_share: float
    top10_share: float
    zone_shares: np.ndarray  # (zones,)
    region_shares: np.ndarray  # (regions,)


def concentration(amount: np.ndarray, zone: np.ndarray, region: np.ndarray, n_regions: int) -> Concentration:
    total = amount.sum()
    zone_exposure = np.bincount(zone, amount, len(ZONES))
    region_exposure = np.bincount(region, amount, n_regions)
    largest = np.sort(amount)[::-1]
    return Concentration(
        zone_hhi=float(metrics.hhi(zone_exposure)),
        region_hhi=float(metrics.hhi(region_exposure)),
        loan_hhi=float(metrics.hhi(amount)),
        top5_share=float(largest[:5].sum() / total),
        top10_share=float(largest[:10].sum() / total),
        zone_shares=zone_exposure / total,
        region_shares=region_exposure / total,
    )


def before_after(book: LoanBook, loan: CandidateLoan, n_regions: int) -> tuple[Concentration, Concentration]:
    before = concentration(book.amount, book.zone, book.region, n_regions)
    after = concentration(
        np.append(book.amount, loan.amount),
        np.append(book.zone, loan.zone),
        np.append(book.region, loan.region),
        n_regions,
    )
    return before, after


def concentration_risk_change(before: Concentration, after: Concentration) -> float:
    """``0.5·ΔHHI_zone + 0.5·ΔHHI_region``: > 0 is more concentrated."""
    return 0.5 * (after.zone_hhi - before.zone_hhi) + 0.5 * (after.region_hhi - before.region_hhi)


def diversification_benefit(
    fund_irr_before: np.ndarray, fund_irr_after: np.ndarray, loan_irr: np.ndarray, loan_weight: float
) -> float:
    """``1 − σ_after / ((1 − w)·σ_fund + w·σ_loan)``: the fund before is one bucket, the loan another,
    weight ``w`` (its share of principal); σ are across-path standard deviations of the gross IRR of the fund
    and of the loan. 0 when the loan moves exactly with the fund, > 0 when it diversifies."""
    sd = [
        float(np.std(x[np.isfinite(x)], ddof=1)) if np.isfinite(x).sum() > 1 else 0.0
        for x in (fund_irr_before, fund_irr_after, loan_irr)
    ]
    standalone = (1.0 - loan_weight) * sd[0] + loan_weight * sd[2]
    return 1.0 - sd[1] / standalone if standalone > 0 else 0.0
