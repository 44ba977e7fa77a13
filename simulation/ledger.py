"""The fund's cash ledger on a monthly grid, vectorised over paths (domain §2.8).

Loan cash flows are scattered onto ``(paths, months + 1)`` arrays first; fees and expenses
follow from them; then one pass over the months moves cash: interest, flows, capital calls up
to the reserve target, and distributions of the cash above the reserve and pending fundings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from . import loans
from .config import CapitalCallMode, FeeBasis, FeeRecipient, FeeTiming
from .lifecycle import MONTHS_PER_YEAR, ChunkMarket, ModelParams, Outcomes

QUARTER = 3


@dataclass(frozen=True)
class LoanFlows:
    """Monthly sums over every loan of every generation, each ``(paths, months + 1)``."""

    originations: np.ndarray  # initial book
    recycled: np.ndarray  # loans bought with recycled proceeds
    proceeds: np.ndarray  # exits, maturities and fund-end sales
    recoveries: np.ndarray
    origination_fees: np.ndarray
    acquisition_fees: np.ndarray
    disposition_fees: np.ndarray
    outstanding: np.ndarray  # principal on the book at each month end
    mark_months: np.ndarray
    loan_value: np.ndarray  # (paths, marks): fair value of active loans plus pending recoveries


def loan_flows(params: ModelParams, mkt: ChunkMarket, outcomes: list[Outcomes], n_paths: int,
               mark_months: np.ndarray) -> LoanFlows:
    fees = params.config.fees
    m = params.months
    initial, recycled, proceeds, recoveries, acquisition, disposition, outstanding = (
        np.zeros((n_paths, m + 1)) for _ in range(7))
    loan_value = np.zeros((n_paths, len(mark_months)))
    for out in outcomes:
        ln = out.loans
        _accumulate(mkt.index, ln.path, params.series(ln.zone, ln.region), ln.origination, ln.amount,
                    ln.value0, ln.rate, ln.share, out.event_month, out.cash_month, out.cash, out.defaulted,
                    fees.acquisition_fee_rate, fees.disposition_fee_rate, mark_months,
                    initial if out.generation == 0 else recycled, proceeds, recoveries, acquisition, disposition,
                    outstanding, loan_value, *params.economics)
    # Principal is never negative; the running sum of +L/-L can round to -1e-10 once a path runs off.
    return LoanFlows(originations=initial, recycled=recycled, proceeds=proceeds, recoveries=recoveries,
                     origination_fees=fees.origination_fee_rate * (initial + recycled),
                     acquisition_fees=acquisition, disposition_fees=disposition,
                     outstanding=np.maximum(np.cumsum(outstanding, axis=1), 0.0),
                     mark_months=mark_months, loan_value=loan_value)


@njit(cache=True, nogil=True)
def _accumulate(index, path, series, origination, amount, value0, rate, share_override, event_month,
                cash_month, cash, defaulted, acquisition_rate, disposition_rate, mark_months, funded, proceeds,
                recoveries, acquisition, disposition, outstanding, loan_value, share_method, fixed_share,
                tier_thresholds, tier_shares, share_depreciation, senior_ltv, sale_cost):
    """Add one generation's loans to the monthly flows and to the marks.

    A loan is marked to model at every mark month t in [origination, event): the exit formula on the index
    value ``V0·I_s(t)/I_s(o)`` without property noise (domain §2.8); a defaulted loan is held at its recovery
    from the default until the cash arrives.
    """
    for k in range(path.size):
        p, s, o, end, paid = path[k], series[k], origination[k], event_month[k], cash_month[k]
        funded[p, o] += amount[k]
        acquisition[p, o] += acquisition_rate * value0[k]
        outstanding[p, o] += amount[k]
        outstanding[p, end] -= amount[k]
        if defaulted[k]:
            recoveries[p, paid] += cash[k]
        else:
            proceeds[p, paid] += cash[k]
            disposition[p, paid] += disposition_rate * cash[k]
        senior = senior_ltv * value0[k]
        for j in range(mark_months.size):
            t = mark_months[j]
            if o <= t < end:
                value = value0[k] * index[p, s, t] / index[p, s, o]
                share = share_override[k]
                if np.isnan(share):
                    share = loans.share_at(share_method, amount[k] / value0[k], value / value0[k] - 1.0,
                                           fixed_share, tier_thresholds, tier_shares)
                loan_value[p, j] += loans.proceeds_at(amount[k], value0[k], value, (t - o) / MONTHS_PER_YEAR,
                                                      rate[k], share, share_depreciation, senior, sale_cost)
            elif defaulted[k] and end <= t < paid:
                loan_value[p, j] += cash[k]


def mark_months_for(params: ModelParams) -> np.ndarray:
    """Year ends for reporting, plus quarter ends when a fee is charged on NAV."""
    fees = params.config.fees
    nav_basis = FeeBasis.NAV in {fees.management_fee_basis, fees.expense_basis} or (
        fees.step_down.enabled and fees.step_down.basis is FeeBasis.NAV)
    step = QUARTER if nav_basis else MONTHS_PER_YEAR
    return np.arange(0, params.months + 1, step)


@dataclass(frozen=True)
class Costs:
    management_fees: np.ndarray  # (paths, months + 1)
    expenses: np.ndarray  # fund expenses incl. organisation costs; loan transaction fees are in LoanFlows


def costs(params: ModelParams, flows: LoanFlows) -> Costs:
    """Quarterly fees and expenses for each quarter of ``[0, term)``; exactly ``term`` years of fees."""
    cfg = params.config
    fees, size, m = cfg.fees, cfg.fund.size, params.months
    n_paths = flows.outstanding.shape[0]
    starts = np.arange(0, m, QUARTER)
    pay = starts if fees.management_fee_timing is FeeTiming.ADVANCE else starts + QUARTER
    mark_index = np.searchsorted(flows.mark_months, starts, side="right") - 1

    def basis(kind: FeeBasis) -> np.ndarray:
        if kind is FeeBasis.COMMITTED:
            return np.full((n_paths, len(starts)), size)
        if kind is FeeBasis.INVESTED:
            return flows.outstanding[:, starts]
        return flows.loan_value[:, mark_index]

    quarter = QUARTER / MONTHS_PER_YEAR
    stepped = fees.step_down.enabled & (starts >= fees.step_down.after_year * MONTHS_PER_YEAR)
    management = quarter * fees.management_fee_rate * np.where(
        stepped, fees.step_down.rate_multiplier * basis(fees.step_down.basis), basis(fees.management_fee_basis))
    fixed = fees.fixed_expenses * (1.0 + fees.fixed_expense_growth) ** (starts // MONTHS_PER_YEAR)
    expenses = quarter * (fees.expense_rate * basis(fees.expense_basis) + fixed)

    management_fees = np.zeros((n_paths, m + 1))
    expense_flow = np.zeros((n_paths, m + 1))
    management_fees[:, pay] = management
    expense_flow[:, pay] = expenses
    expense_flow[:, 0] += fees.organisation_costs
    return Costs(management_fees=management_fees, expenses=expense_flow)


@dataclass(frozen=True)
class Ledger:
    """The fund's cash decisions per month, each ``(paths, months + 1)``."""

    calls: np.ndarray  # capital called from the LP class (LPs and the GP commitment)
    distributions: np.ndarray  # distributable cash handed to the waterfall
    cash: np.ndarray  # month-end cash after calls and distributions (negative = overdraft)
    interest: np.ndarray  # idle-cash interest (or overdraft cost when negative)
    reserve_target: np.ndarray


def fee_income(params: ModelParams, flows: LoanFlows) -> np.ndarray | float:
    """Origination fees the fund keeps (zero when they are GP revenue)."""
    return flows.origination_fees if params.config.fees.origination_fee_recipient is FeeRecipient.FUND else 0.0


def running_costs(cost: Costs, flows: LoanFlows) -> np.ndarray:
    """Every fee and expense the fund pays: management fees, fund expenses, loan transaction fees."""
    return cost.management_fees + cost.expenses + flows.acquisition_fees + flows.disposition_fees


def run_ledger(params: ModelParams, flows: LoanFlows, cost: Costs) -> Ledger:
    """Move the fund's cash month by month (domain §2.8).

    Cash is held in two parts: called ``capital`` not yet spent, and ``earned`` cash (receipts and interest
    not yet distributed). Receipts less the recycled fundings bought with them are earned; fees and
    expenses are paid from earned cash first, then from capital; loans of the initial book are paid only
    from capital, called as needed. Exit proceeds therefore never fund the initial book: the only proceeds
    reinvested are those the recycling policy retains, spent on recycled loans in the month they arrive.
    During the reinvestment period a call also tops the cash up to the reserve target, but only when the fund
    calls anyway (for loans, or for costs the cash cannot meet): it never calls between two distributions
    just to rebuild the reserve, so capital is not called back right after it was paid out. Distributions pay out
    cash above the reserve, less the capital kept for initial loans still to fund, earned cash first. Once
    the commitments are fully called no cost can be met by a call any more, so the reserve then holds every
    fee and expense still to come until fund end.
    """
    fund, m = params.config.fund, params.months
    n_paths = flows.outstanding.shape[0]
    kept = flows.proceeds + flows.recoveries + fee_income(params, flows) - flows.recycled
    spent = running_costs(cost, flows)
    reserve = _reserve_target(params, spent)
    costs_to_come = spent[:, ::-1].cumsum(axis=1)[:, ::-1] - spent  # after each month, to fund end
    pending = flows.originations.sum(axis=1, keepdims=True) - np.cumsum(flows.originations, axis=1)
    scheduled = _scheduled_calls(params)
    topup_until = fund.reinvestment_period_years * MONTHS_PER_YEAR
    monthly_rate = (1.0 + fund.cash_rate) ** (1.0 / MONTHS_PER_YEAR) - 1.0

    distribution_month = np.zeros(m + 1, dtype=np.bool_)
    distribution_month[fund.distribution_frequency_months::fund.distribution_frequency_months] = True
    calls, distributions, cash, interest = _move_cash(
        kept, spent, flows.originations, reserve, costs_to_come, pending, scheduled, distribution_month,
        int(np.floor(topup_until)), monthly_rate, fund.size)
    return Ledger(calls=calls, distributions=distributions, cash=cash, interest=interest, reserve_target=reserve)


@njit(cache=True, nogil=True)
def _move_cash(kept, spent, initial, reserve, costs_to_come, pending, scheduled, distribution_month, topup_until,
               monthly_rate, size):
    """The month-by-month rules of ``run_ledger``, path by path."""
    n_paths, points = kept.shape
    last = points - 1
    calls, distributions = np.zeros((n_paths, points)), np.zeros((n_paths, points))
    cash_out, interest_out = np.zeros((n_paths, points)), np.zeros((n_paths, points))
    for p in range(n_paths):
        capital, earned, unfunded = 0.0, 0.0, size
        for month in range(points):
            interest = (capital + earned) * monthly_rate
            earned = earned + interest + kept[p, month] - spent[p, month]
            capital = capital - initial[p, month] + min(earned, 0.0)
            earned = max(earned, 0.0)
            floor = reserve[p, month] if month <= topup_until and capital < 0.0 else 0.0
            call = min(max(max(scheduled[month], -capital, floor - capital - earned), 0.0), unfunded)
            capital += call
            unfunded -= call
            cash = capital + earned
            paid = 0.0
            if month == last:
                paid = max(cash, 0.0)
            elif distribution_month[month]:
                keep = reserve[p, month] if unfunded > 0.0 else max(reserve[p, month], costs_to_come[p, month])
                held = min(pending[p, month], max(capital - keep, 0.0))
                paid = max(0.0, cash - keep - held)
            from_earned = min(paid, earned)
            earned -= from_earned
            capital -= paid - from_earned
            calls[p, month], distributions[p, month] = call, paid
            cash_out[p, month], interest_out[p, month] = capital + earned, interest
    return calls, distributions, cash_out, interest_out


def _reserve_target(params: ModelParams, spent: np.ndarray) -> np.ndarray:
    """``max(reserve_fraction·size, next reserve_months of fees and expenses)``; zero at fund end."""
    fund, m = params.config.fund, params.months
    running = np.cumsum(spent, axis=1)
    ahead = np.minimum(np.arange(m + 1) + fund.reserve_months_of_costs, m)
    upcoming = running[:, ahead] - running
    target = np.maximum(fund.reserve_fraction * fund.size, upcoming)
    target[:, m] = 0.0
    return target


def _scheduled_calls(params: ModelParams) -> np.ndarray:
    fund, m = params.config.fund, params.months
    scheduled = np.zeros(m + 1)
    if fund.capital_call_mode is CapitalCallMode.UPFRONT:
        scheduled[0] = fund.size
    elif fund.capital_call_mode is CapitalCallMode.SCHEDULE:
        for entry in fund.capital_call_schedule:
            scheduled[int(round(entry.year * MONTHS_PER_YEAR))] += entry.fraction * fund.size
    return scheduled
