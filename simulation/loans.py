"""Loan economics (domain §1.2, §1.3, §1.5), vectorised over flat loan arrays of shape (K,).

A loan advances ``amount`` L against a property worth ``value0`` V0. It pays nothing until it ends;
then the fund's claim is principal, simple interest and a share of the price gain, never more than
the homeowner's equity in the property. Times are in years since origination.
"""

from __future__ import annotations

import numpy as np


def appreciation_share(
    method: str,
    ltv: np.ndarray,
    growth: np.ndarray,
    fixed_rate: float,
    tier_thresholds: tuple[float, ...],
    tier_shares: tuple[float, ...],
) -> np.ndarray:
    """The fund's share s of the property's price change, per loan.

    * ``ltv_based``: s = LTV = L / V0 (the product rule);
    * ``fixed``: s = ``fixed_rate``;
    * ``tiered``: s = ``tier_shares[i]`` where i counts the ascending ``tier_thresholds`` that the
      total appreciation ``growth = V_T/V0 − 1`` reaches (a threshold starts its tier). The share is
      applied to ``V_T − V0`` by ``exit_proceeds``, not to ``V_T·growth`` (V2's bug, pitfall P-14).
    """
    if method == "ltv_based":
        return np.array(ltv, dtype=float)
    if method == "fixed":
        return np.full(np.shape(ltv), float(fixed_rate))
    if method == "tiered":
        return np.asarray(tier_shares, dtype=float)[np.searchsorted(tier_thresholds, growth, side="right")]
    raise ValueError(f"unknown appreciation share method {method!r}")


def accrued_interest(amount: np.ndarray, rate: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Simple interest ``L·r·τ``, capitalised to the end of the loan."""
    return amount * rate * years


def exit_proceeds(
    amount: np.ndarray,
    value0: np.ndarray,
    value_t: np.ndarray,
    years: np.ndarray,
    rate: np.ndarray,
    share: np.ndarray,
    share_depreciation: bool,
    senior_debt: np.ndarray,
    sale_cost: float,
) -> np.ndarray:
    """Cash the fund receives when the loan ends by sale or refinance after ``years``.

    The claim is ``L + L·r·τ + s·max(0, V_T − V0)``, or ``s·(V_T − V0)`` when the fund shares
    depreciation, and it is paid only out of the homeowner's equity at sale,
    ``max(0, V_T·(1 − sale_cost) − senior_debt)``. It is never negative: the fund does not pay the
    homeowner at exit. It is also the mark-to-model of a live loan at a mark date (domain §2.8):
    what the loan would pay if the property sold now, on the index value without property noise.
    """
    gain = value_t - value0
    if not share_depreciation:
        gain = np.maximum(gain, 0.0)
    claim = amount + accrued_interest(amount, rate, years) + share * gain
    equity = np.maximum(value_t * (1.0 - sale_cost) - senior_debt, 0.0)
    return np.clip(claim, 0.0, equity)


def default_recovery(
    amount: np.ndarray,
    years_to_default: np.ndarray,
    rate: np.ndarray,
    value_at_default: np.ndarray,
    foreclosure_cost: float,
    senior_debt: np.ndarray,
    recovery_haircut: np.ndarray,
) -> np.ndarray:
    """Cash recovered from a defaulted loan (domain §1.5): collateral-based, not a constant rate.

    ``R = min(L + L·r·t_d, max(0, V_td·(1 − foreclosure_cost) − senior_debt)) · recovery_haircut``;
    no appreciation share is owed on a default.
    """
    claim = amount + accrued_interest(amount, rate, years_to_default)
    collateral = np.maximum(value_at_default * (1.0 - foreclosure_cost) - senior_debt, 0.0)
    return np.minimum(claim, collateral) * recovery_haircut
