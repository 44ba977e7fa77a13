"""Loan economics (domain §1.2, §1.3, §1.5): one scalar definition of each rule, compiled with numba.

A loan advances ``amount`` L against a property worth ``value0`` V0. It pays nothing until it ends;
then the fund's claim is principal, simple interest and a share of the price gain, never more than
the homeowner's equity in the property. Times are in years since origination.

The scalar functions (``share_at``, ``proceeds_at``, ``recovery_at``) are what the engine's kernels call
per loan; the array functions below apply the same definitions elementwise, for callers and tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SHARE_METHODS = ("ltv_based", "fixed", "tiered")
LTV_BASED, FIXED, TIERED = range(3)


@njit(cache=True, nogil=True)
def share_at(method: int, ltv: float, growth: float, fixed_rate: float, tier_thresholds: np.ndarray,
             tier_shares: np.ndarray) -> float:
    """The fund's share s of the property's price change.

    * ``LTV_BASED``: s = LTV = L / V0 (the product rule);
    * ``FIXED``: s = ``fixed_rate``;
    * ``TIERED``: s = ``tier_shares[i]`` where i counts the ascending ``tier_thresholds`` that the total
      appreciation ``growth = V_T/V0 − 1`` reaches (a threshold starts its tier). The share is applied to
      ``V_T − V0`` by ``proceeds_at``, not to ``V_T·growth`` (V2's bug, pitfall P-14).
    """
    if method == LTV_BASED:
        return ltv
    if method == FIXED:
        return fixed_rate
    return tier_shares[np.searchsorted(tier_thresholds, growth, side="right")]


@njit(cache=True, nogil=True)
def proceeds_at(amount: float, value0: float, value_t: float, years: float, rate: float, share: float,
                share_depreciation: bool, senior_debt: float, sale_cost: float) -> float:
    """Cash the fund receives when the loan ends by sale or refinance after ``years``.

    The claim is ``L + L·r·τ + s·max(0, V_T − V0)``, or ``s·(V_T − V0)`` when the fund shares depreciation,
    and it is paid only out of the homeowner's equity at sale, ``max(0, V_T·(1 − sale_cost) − senior_debt)``.
    It is never negative: the fund does not pay the homeowner at exit. It is also the mark-to-model of a
    live loan at a mark date (domain §2.8): what the loan would pay if the property sold now, on the index
    value without property noise.
    """
    gain = value_t - value0
    if not share_depreciation and gain < 0.0:
        gain = 0.0
    claim = amount + amount * rate * years + share * gain
    equity = max(value_t * (1.0 - sale_cost) - senior_debt, 0.0)
    return min(max(claim, 0.0), equity)


@njit(cache=True, nogil=True)
def recovery_at(amount: float, years_to_default: float, rate: float, value_at_default: float,
                foreclosure_cost: float, senior_debt: float, recovery_haircut: float) -> float:
    """Cash recovered from a defaulted loan (domain §1.5): collateral-based, not a constant rate.

    ``R = min(L + L·r·t_d, max(0, V_td·(1 − foreclosure_cost) − senior_debt)) · recovery_haircut``;
    no appreciation share is owed on a default.
    """
    claim = amount + amount * rate * years_to_default
    collateral = max(value_at_default * (1.0 - foreclosure_cost) - senior_debt, 0.0)
    return min(claim, collateral) * recovery_haircut


def accrued_interest(amount: np.ndarray, rate: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Simple interest ``L·r·τ``, capitalised to the end of the loan."""
    return amount * rate * years


def appreciation_share(method: str, ltv: np.ndarray, growth: np.ndarray, fixed_rate: float,
                       tier_thresholds: tuple[float, ...], tier_shares: tuple[float, ...]) -> np.ndarray:
    """``share_at`` elementwise; ``method`` is one of ``SHARE_METHODS``."""
    if method not in SHARE_METHODS:
        raise ValueError(f"unknown appreciation share method {method!r}")
    ltv, growth = (np.ascontiguousarray(a, dtype=float).ravel() for a in np.broadcast_arrays(ltv, growth))
    return _shares(SHARE_METHODS.index(method), ltv, growth, float(fixed_rate),
                   np.asarray(tier_thresholds, dtype=float), np.asarray(tier_shares, dtype=float))


def exit_proceeds(amount, value0, value_t, years, rate, share, share_depreciation: bool, senior_debt,
                  sale_cost: float) -> np.ndarray:
    """``proceeds_at`` elementwise over broadcast arrays."""
    columns = _columns(amount, value0, value_t, years, rate, share, senior_debt)
    return _proceeds(*columns[:6], bool(share_depreciation), columns[6], float(sale_cost))


def default_recovery(amount, years_to_default, rate, value_at_default, foreclosure_cost: float, senior_debt,
                     recovery_haircut) -> np.ndarray:
    """``recovery_at`` elementwise over broadcast arrays."""
    a, y, r, v, s, h = _columns(amount, years_to_default, rate, value_at_default, senior_debt, recovery_haircut)
    return _recoveries(a, y, r, v, float(foreclosure_cost), s, h)


def _columns(*arrays) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=float).ravel() for a in np.broadcast_arrays(*arrays)]


@njit(cache=True, nogil=True)
def _shares(method, ltv, growth, fixed_rate, thresholds, shares):
    out = np.empty(ltv.size)
    for i in range(ltv.size):
        out[i] = share_at(method, ltv[i], growth[i], fixed_rate, thresholds, shares)
    return out


@njit(cache=True, nogil=True)
def _proceeds(amount, value0, value_t, years, rate, share, share_depreciation, senior, sale_cost):
    out = np.empty(amount.size)
    for i in range(amount.size):
        out[i] = proceeds_at(amount[i], value0[i], value_t[i], years[i], rate[i], share[i], share_depreciation,
                             senior[i], sale_cost)
    return out


@njit(cache=True, nogil=True)
def _recoveries(amount, years, rate, value, foreclosure_cost, senior, haircut):
    out = np.empty(amount.size)
    for i in range(amount.size):
        out[i] = recovery_at(amount[i], years[i], rate[i], value[i], foreclosure_cost, senior[i], haircut[i])
    return out
