"""Distribution waterfalls (domain spec §3): European whole-of-fund and American deal-by-deal.

Both are vectorised over Monte Carlo paths. Flows are ``(P, T)`` arrays on a common period grid
``times`` ``(T,)`` in years from fund inception; the Python loops run over periods (or deals), never
over paths. Within a period, contributions come before the distribution.

"LP-class" is every investor that is not carry: the LPs plus the GP's own commitment, which takes LP
treatment (return of capital, preferred return, the LP side of every split) pro rata to paid-in
capital. Carry is what the GP receives in tiers 3 and 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

COMPOUNDING_MODES: tuple[str, ...] = ("annual", "quarterly", "monthly", "continuous", "simple")
_COMPOUNDINGS_PER_YEAR = {"annual": 1, "quarterly": 4, "monthly": 12}


@dataclass(frozen=True)
class WaterfallTerms:
    """Economic terms of the distribution waterfall.

    ``catch_up_rate`` is the GP's share ``c`` of tier-3 cash: 1.0 is a full catch-up, a value between
    ``carry_rate`` and 1 a partial one. A catch-up with ``c <= carry_rate`` (0 included) can never
    bring the GP to ``carry_rate`` of profit, so, as §3.2 step 3 prescribes, it is treated as no
    catch-up tier at all: cash goes straight from the preferred return to the split.
    """

    hurdle_rate: float = 0.08
    compounding: str = "annual"
    carry_rate: float = 0.20
    catch_up_rate: float = 1.0
    gp_commitment: float = 0.02
    management_fee_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.compounding not in COMPOUNDING_MODES:
            raise ValueError(f"compounding must be one of {COMPOUNDING_MODES}, got {self.compounding!r}")
        _check_range("hurdle_rate", self.hurdle_rate, 0.0, math.inf)
        _check_range("carry_rate", self.carry_rate, 0.0, 1.0, high_inclusive=False)
        _check_range("catch_up_rate", self.catch_up_rate, 0.0, 1.0)
        _check_range("gp_commitment", self.gp_commitment, 0.0, 1.0, high_inclusive=False)
        _check_range("management_fee_offset", self.management_fee_offset, 0.0, 1.0)

    @property
    def catch_up_per_pref(self) -> float:
        """Tier-3 cash per unit of preferred return paid, ``carry / (c - carry)``; 0 without catch-up."""
        if self.catch_up_rate <= self.carry_rate:
            return 0.0
        return self.carry_rate / (self.catch_up_rate - self.carry_rate)


def _check_range(name: str, value: float, low: float, high: float, *, high_inclusive: bool = True) -> None:
    below_high = value <= high if high_inclusive else value < high
    if not (math.isfinite(value) and low <= value and below_high):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be finite and in [{low}, {high}{bracket}, got {value!r}")


def split_lp_class(amount: np.ndarray, gp_commitment: float) -> tuple[np.ndarray, np.ndarray]:
    """Split LP-class cash pro rata to paid-in capital: ``(LPs' share, GP commitment's share)``."""
    gp_commitment_share = gp_commitment * amount
    return amount - gp_commitment_share, gp_commitment_share


# --------------------------------------------------------------------------------------------------
# European (whole-of-fund)


class _LpClassSplit:
    """The LP-class cash of a waterfall result, split between the LPs and the GP commitment."""

    lp_class: np.ndarray
    gp_commitment: float

    @property
    def lp(self) -> np.ndarray:
        """The LPs' part of the LP-class cash each period."""
        return split_lp_class(self.lp_class, self.gp_commitment)[0]

    @property
    def gp_commitment_share(self) -> np.ndarray:
        """The GP commitment's part of the LP-class cash each period."""
        return split_lp_class(self.lp_class, self.gp_commitment)[1]


@dataclass(frozen=True, eq=False)
class EuropeanResult(_LpClassSplit):
    """Per-period ``(P, T)`` allocation of each distribution; the six tier arrays sum to it.

    ``fee_offset`` is carry withheld from the GP under the management fee offset and paid to the
    LP-class instead. ``unreturned_capital`` and ``unpaid_preferred`` are the hurdle account after
    each period's distribution.
    """

    return_of_capital: np.ndarray
    preferred_return: np.ndarray
    catch_up_gp: np.ndarray
    catch_up_lp: np.ndarray
    split_lp: np.ndarray
    split_gp: np.ndarray
    fee_offset: np.ndarray
    unreturned_capital: np.ndarray
    unpaid_preferred: np.ndarray
    gp_commitment: float

    @property
    def gp_carry(self) -> np.ndarray:
        """Carry paid to the GP each period, net of the management fee offset."""
        return self.catch_up_gp + self.split_gp - self.fee_offset

    @property
    def lp_class(self) -> np.ndarray:
        """Cash paid to the LP-class (LPs and GP commitment) each period."""
        tiers = self.return_of_capital + self.preferred_return + self.catch_up_lp + self.split_lp
        return tiers + self.fee_offset

    @property
    def total_gp_carry(self) -> np.ndarray:
        """Carry paid over the whole grid, per path ``(P,)``."""
        return self.gp_carry.sum(axis=1)

    @property
    def total_lp_class(self) -> np.ndarray:
        """LP-class cash over the whole grid, per path ``(P,)``."""
        return self.lp_class.sum(axis=1)

    @property
    def hurdle_shortfall(self) -> np.ndarray:
        """Preferred return owed but still unpaid after the final period, per path ``(P,)``."""
        return self.unpaid_preferred[:, -1]


def preferred_accrual(
    unreturned: np.ndarray, unpaid_pref: np.ndarray, dt: float | np.ndarray, terms: WaterfallTerms
) -> np.ndarray:
    """Preferred return accrued over ``dt`` years on capital ``unreturned`` with ``unpaid_pref`` owed.

    Compounding modes grow the whole hurdle account ``K + P`` (so unpaid pref compounds); ``simple``
    accrues ``h * K * dt`` on capital only.
    """
    h = terms.hurdle_rate
    if terms.compounding == "simple":
        return h * dt * unreturned
    if terms.compounding == "continuous":
        log_growth_per_year = h
    else:
        n = _COMPOUNDINGS_PER_YEAR[terms.compounding]
        log_growth_per_year = n * math.log1p(h / n)
    return (unreturned + unpaid_pref) * np.expm1(log_growth_per_year * dt)


def european(
    contributions: np.ndarray,
    distributions: np.ndarray,
    times: np.ndarray,
    terms: WaterfallTerms,
    management_fees: np.ndarray | None = None,
) -> EuropeanResult:
    """Whole-of-fund waterfall of §3.2 over LP-class ``contributions`` and fund ``distributions``.

    Tiers: 1 return of capital, 2 preferred return (hurdle account compounding per ``terms``),
    3 GP catch-up until the GP holds ``carry_rate`` of all profit paid so far, 4 the split.
    ``management_fees`` (paid per period) build an offset credit of ``management_fee_offset`` x fees
    that is consumed by carry as it is earned and paid to the LP-class instead; carry already paid
    is never reversed by later fees.
    """
    contributions = _flows("contributions", contributions)
    distributions = _flows("distributions", distributions, like=contributions)
    times = _grid(times, contributions.shape[1])
    paths, periods = distributions.shape

    dt = np.diff(times)
    simple = terms.compounding == "simple"
    # growth of the hurdle account over each period (or h·dt on capital alone, for simple accrual)
    accrual = terms.hurdle_rate * dt if simple else preferred_accrual(np.ones_like(dt), np.zeros_like(dt), dt, terms)
    tiers, unreturned, unpaid_pref = _hurdle_account(contributions, distributions, accrual, simple,
                                                     terms.catch_up_per_pref)
    capital, pref, catch_up, split = tiers
    catch_up_gp = terms.catch_up_rate * catch_up
    split_gp = terms.carry_rate * split
    return EuropeanResult(
        return_of_capital=capital,
        preferred_return=pref,
        catch_up_gp=catch_up_gp,
        catch_up_lp=catch_up - catch_up_gp,
        split_lp=split - split_gp,
        split_gp=split_gp,
        fee_offset=_fee_offset(catch_up_gp + split_gp, management_fees, terms),
        unreturned_capital=unreturned,
        unpaid_preferred=unpaid_pref,
        gp_commitment=terms.gp_commitment,
    )


@njit(cache=True, nogil=True)
def _hurdle_account(contributions, distributions, accrual, simple, catch_up_per_pref):
    """§3.2 per path, period by period: the hurdle account ``H = K + P`` accrues, takes the period's
    contribution, then pays the distribution through tiers 1-4 (tier 3 both sides). Returns the tiers
    ``(4, P, T)``, and ``K`` and ``P`` after each period."""
    paths, periods = distributions.shape
    tiers = np.zeros((4, paths, periods))
    unreturned_out, unpaid_out = np.empty((paths, periods)), np.empty((paths, periods))
    for p in range(paths):
        unreturned = unpaid_pref = pref_paid = catch_up_paid = 0.0  # K, P, Pref_cum, X_cum
        for t in range(periods):
            if t > 0:
                unpaid_pref += accrual[t - 1] * unreturned if simple else (unreturned + unpaid_pref) * accrual[t - 1]
            unreturned += contributions[p, t]
            remaining = distributions[p, t]
            capital = min(remaining, unreturned)
            unreturned -= capital
            remaining -= capital
            pref = min(remaining, unpaid_pref)
            unpaid_pref -= pref
            pref_paid += pref
            remaining -= pref
            # The target grows whenever more preferred return is paid, so it is recomputed every time.
            catch_up = min(max(catch_up_per_pref * pref_paid - catch_up_paid, 0.0), remaining)
            catch_up_paid += catch_up
            tiers[0, p, t], tiers[1, p, t], tiers[2, p, t], tiers[3, p, t] = capital, pref, catch_up, remaining - catch_up
            unreturned_out[p, t], unpaid_out[p, t] = unreturned, unpaid_pref
    return tiers, unreturned_out, unpaid_out


def _fee_offset(carry: np.ndarray, management_fees: np.ndarray | None, terms: WaterfallTerms) -> np.ndarray:
    """Carry withheld each period: the offset credit (offset x fees paid so far, less credit used) caps it."""
    withheld = np.zeros_like(carry)
    if management_fees is None:
        return withheld
    fees = _flows("management_fees", management_fees, like=carry)
    credit = np.zeros(carry.shape[0])
    for t in range(carry.shape[1]):
        credit += terms.management_fee_offset * fees[:, t]
        withheld[:, t] = np.minimum(carry[:, t], credit)
        credit -= withheld[:, t]
    return withheld


# --------------------------------------------------------------------------------------------------
# American (deal-by-deal)


@dataclass(frozen=True, eq=False)
class AmericanResult(_LpClassSplit):
    """Deal-by-deal carry paid out of the fund's distributions, with the final European clawback.

    ``carry_paid`` is net of the management fee offset (``fee_offset``) and before the clawback;
    ``unpaid_carry`` is deal carry earned but still deferred after the final period for lack of
    distributions. The clawback is repaid by the GP to the LP-class in the final period.
    """

    distributions: np.ndarray
    carry_realised: np.ndarray
    carry_paid: np.ndarray
    fee_offset: np.ndarray
    unpaid_carry: np.ndarray
    clawback: np.ndarray
    european_carry: np.ndarray
    gp_commitment: float

    @property
    def gp_carry(self) -> np.ndarray:
        """Carry to the GP each period; the final period is net of the clawback (can be negative)."""
        carry = self.carry_paid.copy()
        carry[:, -1] -= self.clawback
        return carry

    @property
    def lp_class(self) -> np.ndarray:
        """Cash paid to the LP-class each period, the clawback included in the final period."""
        return self.distributions - self.gp_carry

    @property
    def total_gp_carry(self) -> np.ndarray:
        """Carry kept by the GP after the clawback, per path ``(P,)``."""
        return self.carry_paid.sum(axis=1) - self.clawback


@dataclass(frozen=True)
class _Deals:
    """Active deal slots of each path; inactive slots hold zero money and end at ``+inf``."""

    contribution: np.ndarray
    holding_years: np.ndarray
    proceeds: np.ndarray
    end_time: np.ndarray


def american(
    deal_contribution: np.ndarray,
    deal_start_time: np.ndarray,
    deal_proceeds: np.ndarray,
    deal_end_time: np.ndarray,
    distributions: np.ndarray,
    contributions: np.ndarray,
    times: np.ndarray,
    terms: WaterfallTerms,
    loss_carryforward: bool = True,
    clawback: bool = True,
    management_fees: np.ndarray | None = None,
) -> AmericanResult:
    """Deal-by-deal waterfall of §3.3 with an optional loss carry-forward and final clawback.

    Deal ``j`` of a path is one contribution at ``deal_start_time`` and one payment of
    ``deal_proceeds`` at ``deal_end_time`` (``(P, D)`` arrays; a NaN or zero contribution marks an
    inactive slot). Each deal runs §3.2 on its own two flows: preferred return
    ``pref = C (growth(end - start) - 1)``, excess over the hurdle ``E = proceeds - C - pref``, then
    catch-up and split on ``E`` when it is positive.

    Loss carry-forward ("modified American"): the deals of a path are taken in order of
    ``deal_end_time`` (at equal end times, in ascending ``E``, so losses come first). A deal with
    ``E < 0`` adds ``-E`` (its capital loss plus its unmet preferred return, fixed at its end date)
    to a deficit; a later deal with ``E > 0`` first repays the deficit, and only the rest of ``E``
    is eligible for catch-up and split. The recouped cash stays with the LP-class.

    Deal carry is earned in the period containing ``deal_end_time`` (period ``k`` spans
    ``(times[k-1], times[k]]``) and paid out of that period's fund ``distributions``; what they
    cannot cover is deferred to later distributions. The rest of each distribution goes to the
    LP-class. ``management_fees`` offset carry as in :func:`european`. With ``clawback``, the GP
    repays ``max(0, carry paid - European carry)`` in the final period, the European carry coming
    from :func:`european` on the fund-level ``contributions`` and ``distributions``.
    """
    distributions = _flows("distributions", distributions)
    contributions = _flows("contributions", contributions, like=distributions)
    times = _grid(times, distributions.shape[1])
    deals = _validated_deals(deal_contribution, deal_start_time, deal_proceeds, deal_end_time, times)
    if deals.contribution.shape[0] != distributions.shape[0]:
        raise ValueError("deal arrays must have one row per path of distributions")

    no_unpaid_pref = np.zeros_like(deals.contribution)
    pref = preferred_accrual(deals.contribution, no_unpaid_pref, deals.holding_years, terms)
    excess = deals.proceeds - deals.contribution - pref
    if loss_carryforward:
        excess = _excess_after_recoupment(excess, deals.end_time)
    carry = _carry_on_excess(np.maximum(excess, 0.0), pref, terms)

    realised = _by_period(carry, deals.end_time, times)
    paid_before_offset, unpaid = _pay_from_distributions(realised, distributions)
    withheld = _fee_offset(paid_before_offset, management_fees, terms)
    paid = paid_before_offset - withheld

    european_carry = european(contributions, distributions, times, terms, management_fees).total_gp_carry
    clawed_back = np.maximum(0.0, paid.sum(axis=1) - european_carry) if clawback else np.zeros_like(unpaid)
    return AmericanResult(
        distributions=distributions,
        carry_realised=realised,
        carry_paid=paid,
        fee_offset=withheld,
        unpaid_carry=unpaid,
        clawback=clawed_back,
        european_carry=european_carry,
        gp_commitment=terms.gp_commitment,
    )


def _validated_deals(
    contribution: np.ndarray, start: np.ndarray, proceeds: np.ndarray, end: np.ndarray, times: np.ndarray
) -> _Deals:
    contribution, start, proceeds, end = (
        np.asarray(a, dtype=np.float64) for a in (contribution, start, proceeds, end)
    )
    if contribution.ndim != 2 or not contribution.shape == start.shape == proceeds.shape == end.shape:
        raise ValueError("deal arrays must all be 2-D with the same (paths, deals) shape")
    if np.any(contribution < 0):
        raise ValueError("deal_contribution must be non-negative")
    active = contribution > 0  # False for NaN too
    for name, values in (("deal_start_time", start), ("deal_proceeds", proceeds), ("deal_end_time", end)):
        if not np.all(np.isfinite(values) | ~active):
            raise ValueError(f"{name} must be finite for every active deal")
    if np.any(active & (proceeds < 0)):
        raise ValueError("deal_proceeds must be non-negative")
    if np.any(active & (end < start)):
        raise ValueError("deal_end_time must not precede deal_start_time")
    if np.any(active & (end > times[-1])):
        raise ValueError("deal_end_time must fall on or before the last grid time")
    return _Deals(
        contribution=np.where(active, contribution, 0.0),
        holding_years=np.where(active, end - start, 0.0),
        proceeds=np.where(active, proceeds, 0.0),
        end_time=np.where(active, end, np.inf),
    )


def _excess_after_recoupment(excess: np.ndarray, end_time: np.ndarray) -> np.ndarray:
    """Each deal's excess over the hurdle once earlier deals' shortfalls have been repaid from it."""
    order = np.lexsort((excess, end_time), axis=1)
    deals_in_order = np.ascontiguousarray(np.take_along_axis(excess, order, axis=1).T)
    deficit = np.zeros(excess.shape[0])
    for deal_excess in deals_in_order:  # one deal of every path at a time, updated in place
        recouped = np.clip(deal_excess, 0.0, deficit)
        deficit += np.maximum(-deal_excess, 0.0) - recouped
        deal_excess -= recouped
    eligible = np.empty_like(excess)
    np.put_along_axis(eligible, order, deals_in_order.T, axis=1)
    return eligible


def _carry_on_excess(excess: np.ndarray, pref: np.ndarray, terms: WaterfallTerms) -> np.ndarray:
    """GP carry from cash ``excess`` paid after a fully paid preferred return ``pref`` (tiers 3-4)."""
    catch_up = np.minimum(excess, terms.catch_up_per_pref * pref)
    return terms.catch_up_rate * catch_up + terms.carry_rate * (excess - catch_up)


def _by_period(amount: np.ndarray, event_time: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Sum ``(P, D)`` amounts into the ``(P, T)`` periods containing their (finite) event times."""
    paths, periods = amount.shape[0], times.shape[0]
    period = np.searchsorted(times, np.where(np.isfinite(event_time), event_time, times[0]))
    cell = np.arange(paths)[:, None] * periods + period
    totals = np.bincount(cell.ravel(), weights=amount.ravel(), minlength=paths * periods)
    return totals.reshape(paths, periods)


def _pay_from_distributions(owed: np.ndarray, distributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pay amounts falling due each period up to that period's distribution, deferring the rest."""
    paid = np.empty_like(owed)
    outstanding = np.zeros(owed.shape[0])
    for t in range(owed.shape[1]):
        outstanding += owed[:, t]
        paid[:, t] = np.minimum(outstanding, distributions[:, t])
        outstanding -= paid[:, t]
    return paid, outstanding


# --------------------------------------------------------------------------------------------------
# Input checks


def _flows(name: str, values: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    flows = np.asarray(values, dtype=np.float64)
    if flows.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (paths, periods) array, got shape {flows.shape}")
    if like is not None and flows.shape != like.shape:
        raise ValueError(f"{name} must have shape {like.shape}, got {flows.shape}")
    if not np.all(np.isfinite(flows) & (flows >= 0)):
        raise ValueError(f"{name} must be finite and non-negative")
    return flows


def _grid(times: np.ndarray, periods: int) -> np.ndarray:
    grid = np.asarray(times, dtype=np.float64)
    if grid.shape != (periods,):
        raise ValueError(f"times must have shape ({periods},), got {grid.shape}")
    if not (np.all(np.isfinite(grid)) and np.all(np.diff(grid) > 0)):
        raise ValueError("times must be finite and strictly increasing")
    return grid
