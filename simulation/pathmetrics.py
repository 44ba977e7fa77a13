"""Per-path results of one chunk: waterfall, IRRs, multiples, yearly marks and credit tallies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from . import metrics, waterfall
from .config import FeeRecipient, WaterfallStructure, ZONES
from .irr import irr_batch, npv
from .ledger import Costs, Ledger, LoanFlows, fee_income, running_costs
from .lifecycle import MONTHS_PER_YEAR, ModelParams, Outcomes

IRR_METRICS = ("gross_irr", "fund_irr", "lp_net_irr", "gp_irr")
CREDIT_COLUMNS = ("loans", "defaults", "exposure", "exposure_at_default", "losses", "loan_years")
YEARLY_SERIES = ("nav", "lp_dpi", "lp_rvpi", "lp_tvpi", "lp_cumulative_distributions", "lp_cumulative_net_cash",
                 "total_value")
# The yearly cash-flow table: sources, uses and the year-end cash, so that every year closes:
# cash_end − previous cash_end = Σ SOURCES − Σ USES; and distributions = its three recipients.
CASHFLOW_SOURCES = ("contributions", "exit_proceeds", "recoveries", "cash_interest", "fee_income")
CASHFLOW_USES = ("initial_originations", "recycled_originations", "management_fees", "expenses", "distributions")
DISTRIBUTION_RECIPIENTS = ("distributions_lp", "distributions_gp_commitment", "carried_interest")
CASHFLOW_LINES = CASHFLOW_SOURCES + CASHFLOW_USES + DISTRIBUTION_RECIPIENTS + ("cash_end", "nav")


@dataclass(frozen=True)
class PathResults:
    """Everything the aggregation needs from a chunk; per-path arrays have ``paths`` rows."""

    scalars: dict[str, np.ndarray]  # (paths,)
    irr_reasons: dict[str, np.ndarray]  # (paths,) int8 IrrReason codes
    yearly: dict[str, np.ndarray]  # (paths, years + 1) at year ends
    credit: np.ndarray  # (zones, len(CREDIT_COLUMNS)) sums over paths
    cashflows: dict[str, np.ndarray]  # (years + 1,) sums over paths of each year's flows

    @staticmethod
    def concatenate(parts: list[PathResults]) -> PathResults:
        return PathResults(
            scalars={k: np.concatenate([p.scalars[k] for p in parts]) for k in parts[0].scalars},
            irr_reasons={k: np.concatenate([p.irr_reasons[k] for p in parts]) for k in parts[0].irr_reasons},
            yearly={k: np.concatenate([p.yearly[k] for p in parts]) for k in parts[0].yearly},
            credit=sum((p.credit for p in parts), np.zeros_like(parts[0].credit)),
            cashflows={k: sum(p.cashflows[k] for p in parts) for k in parts[0].cashflows},
        )


def waterfall_terms(params: ModelParams) -> waterfall.WaterfallTerms:
    w = params.config.waterfall
    catch_up = {"full": 1.0, "partial": w.catch_up_rate, "none": 0.0}[w.catch_up.value]
    return waterfall.WaterfallTerms(
        hurdle_rate=w.hurdle_rate, compounding=w.hurdle_compounding.value, carry_rate=w.carry_rate,
        catch_up_rate=catch_up, gp_commitment=params.config.fund.gp_commitment,
        management_fee_offset=w.management_fee_offset)


def _split(params: ModelParams, ledger: Ledger, cost: Costs, flows: LoanFlows, outcomes: list[Outcomes],
           times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LP-class distributions and GP carry per month under the configured waterfall."""
    terms = waterfall_terms(params)
    w = params.config.waterfall
    if w.structure is WaterfallStructure.EUROPEAN:
        result = waterfall.european(ledger.calls, ledger.distributions, times, terms, cost.management_fees)
        return result.lp_class, result.gp_carry
    deal_contribution, start, proceeds, end = _deals(running_costs(cost, flows), outcomes, times)
    result = waterfall.american(deal_contribution, start, proceeds, end, ledger.distributions, ledger.calls,
                                times, terms, loss_carryforward=w.loss_carryforward, clawback=w.clawback,
                                management_fees=cost.management_fees)
    return result.lp_class, result.gp_carry


def _deals(spent: np.ndarray, outcomes: list[Outcomes], times: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each loan of every generation is a deal; its contribution is its principal plus the fund's fees and
    expenses allocated pro rata to principal (domain §3.3). Returns ``(contribution, start, proceeds,
    end)``, each ``(paths, deals)``."""
    n_paths = spent.shape[0]
    path = np.concatenate([o.loans.path for o in outcomes])
    amount = np.concatenate([o.loans.amount for o in outcomes])
    principal = np.bincount(path, amount, n_paths)
    loading = np.divide(spent.sum(axis=1), principal, out=np.zeros(n_paths), where=principal > 0)
    columns = (
        amount * (1.0 + loading[path]),
        times[np.concatenate([o.loans.origination for o in outcomes])],
        np.concatenate([o.cash for o in outcomes]),
        times[np.concatenate([o.cash_month for o in outcomes])],
    )
    return tuple(_pack_by_path(path, values, n_paths) for values in columns)


def _pack_by_path(path: np.ndarray, values: np.ndarray, n_paths: int) -> np.ndarray:
    """Scatter flat per-loan values into ``(paths, max loans per path)`` rows, NaN-padded."""
    order = np.argsort(path, kind="stable")
    counts = np.bincount(path, minlength=n_paths)
    rank_in_path = np.arange(len(path)) - np.repeat(np.cumsum(counts) - counts, counts)
    grid = np.full((n_paths, counts.max()), np.nan)
    grid[path[order], rank_in_path] = values[order]
    return grid


def _irr(flows: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rates, reasons, _ = irr_batch(flows, times)
    return rates, reasons


def year_index(months: int) -> np.ndarray:
    """Reporting year of each month: month 0 is year 0, months 12(y-1)+1 .. 12y are year y."""
    return (np.arange(months + 1) + MONTHS_PER_YEAR - 1) // MONTHS_PER_YEAR


def _by_year(flow: np.ndarray, years: int) -> np.ndarray:
    """Sum each path's monthly flow into reporting years: month 0 is year 0, months 12(y−1)+1..12y year y."""
    return np.add.reduceat(flow, np.concatenate([[0], np.arange(years) * MONTHS_PER_YEAR + 1]), axis=1)


def compute(params: ModelParams, outcomes: list[Outcomes], flows: LoanFlows, cost: Costs,
            ledger: Ledger) -> PathResults:
    cfg = params.config
    m, g = params.months, cfg.fund.gp_commitment
    years = cfg.fund.term_years
    times = np.arange(m + 1) / MONTHS_PER_YEAR
    lp_class, carry = _split(params, ledger, cost, flows, outcomes, times)
    fund_fee_income = fee_income(params, flows)
    gp_fee_income = flows.origination_fees - fund_fee_income

    invested = flows.originations + flows.recycled
    returned = flows.proceeds + flows.recoveries + fund_fee_income
    gross_cf = returned - invested
    fund_cf = ledger.distributions - ledger.calls
    lp_cf = (1.0 - g) * (lp_class - ledger.calls)
    gp_cf = g * (lp_class - ledger.calls) + carry  # commitment and carry; fee income is in gp_total_income

    scalars: dict[str, np.ndarray] = {}
    reasons: dict[str, np.ndarray] = {}
    for name, cf in zip(IRR_METRICS, (gross_cf, fund_cf, lp_cf, gp_cf)):
        scalars[name], reasons[name] = _irr(cf, times)

    lp_paid_in = (1.0 - g) * ledger.calls.sum(axis=1)
    lp_distributed = (1.0 - g) * lp_class.sum(axis=1)
    scalars["gross_moic"] = metrics.multiples(invested, returned).moic
    scalars["fund_moic"] = metrics.multiples(ledger.calls, ledger.distributions).moic
    lp_multiples = metrics.multiples(ledger.calls, lp_class)
    scalars["lp_moic"], scalars["lp_roi"] = lp_multiples.moic, lp_multiples.roi
    scalars["payback_years"] = metrics.payback_period(lp_cf, times)
    scalars["lp_npv"] = npv(cfg.reporting.discount_rate, lp_cf, times)
    scalars["gp_carry"] = carry.sum(axis=1)
    scalars["gp_total_income"] = (carry + cost.management_fees + gp_fee_income).sum(axis=1)
    scalars["lp_contributions"] = lp_paid_in
    scalars["lp_distributions"] = lp_distributed
    scalars["recycling_ratio"] = flows.recycled.sum(axis=1) / cfg.fund.size
    scalars["min_cash"] = ledger.cash.min(axis=1)

    year_ends = np.arange(years + 1) * MONTHS_PER_YEAR
    mark_at = np.searchsorted(flows.mark_months, year_ends)
    nav = ledger.cash[:, year_ends] + flows.loan_value[:, mark_at]
    cumulative_paid_in = (1.0 - g) * np.cumsum(ledger.calls, axis=1)[:, year_ends]
    cumulative_lp = (1.0 - g) * np.cumsum(lp_class, axis=1)[:, year_ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        dpi = cumulative_lp / cumulative_paid_in
        rvpi = (1.0 - g) * nav / cumulative_paid_in
    total_value = nav + np.cumsum(ledger.distributions, axis=1)[:, year_ends]
    scalars["lp_dpi"] = dpi[:, -1]
    scalars["max_drawdown"] = metrics.max_drawdown(total_value)
    yearly = {"nav": nav, "lp_dpi": dpi, "lp_rvpi": rvpi, "lp_tvpi": dpi + rvpi,
              "lp_cumulative_distributions": cumulative_lp, "lp_cumulative_net_cash": cumulative_lp - cumulative_paid_in,
              "total_value": total_value}

    credit, loan_stats = _credit(outcomes, ledger.calls.shape[0])
    scalars.update(loan_stats)
    lp, gp_commitment = waterfall.split_lp_class(lp_class, g)
    by_year = {
        "contributions": ledger.calls, "exit_proceeds": flows.proceeds, "recoveries": flows.recoveries,
        "cash_interest": ledger.interest, "fee_income": np.broadcast_to(fund_fee_income, ledger.calls.shape),
        "initial_originations": flows.originations, "recycled_originations": flows.recycled,
        "management_fees": cost.management_fees,
        "expenses": cost.expenses + flows.acquisition_fees + flows.disposition_fees,
        "distributions": ledger.distributions, "distributions_lp": lp, "distributions_gp_commitment": gp_commitment,
        "carried_interest": carry,
    }
    cashflows = {k: _by_year(v, years).sum(axis=0) for k, v in by_year.items()}
    cashflows["cash_end"] = ledger.cash[:, year_ends].sum(axis=0)
    cashflows["nav"] = nav.sum(axis=0)
    return PathResults(scalars=scalars, irr_reasons=reasons, yearly=yearly, credit=credit, cashflows=cashflows)


def _credit(outcomes: list[Outcomes], n_paths: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Credit tallies by zone (summed over paths) and per-path WAL, default and loss rates."""
    credit = np.zeros((len(ZONES), len(CREDIT_COLUMNS)))
    per_path = np.zeros((5, n_paths))  # principal, principal × life, loans, defaults, losses
    for out in outcomes:
        ln = out.loans
        _tally(ln.path, ln.zone, ln.origination, ln.amount, ln.rate, out.event_month, out.cash, out.defaulted,
               credit, per_path)
    principal, weighted_life, count, defaults, losses = per_path
    stats = {"wal_years": weighted_life / principal, "default_rate": defaults / count,
             "loss_rate": losses / principal, "loans_funded": count}
    return credit, stats


@njit(cache=True, nogil=True)
def _tally(path, zone, origination, amount, rate, event_month, cash, defaulted, credit, per_path):
    """Add one generation to the zone columns of ``CREDIT_COLUMNS`` and the per-path tallies. A default's
    exposure is principal plus accrued interest; its loss is what the recovery leaves of it."""
    for k in range(path.size):
        life = (event_month[k] - origination[k]) / MONTHS_PER_YEAR
        exposure_at_default = amount[k] * (1.0 + rate[k] * life)
        is_default = 1.0 if defaulted[k] else 0.0
        loss = max(0.0, exposure_at_default - cash[k]) if defaulted[k] else 0.0
        z, p = zone[k], path[k]
        credit[z, 0] += 1.0
        credit[z, 1] += is_default
        credit[z, 2] += amount[k]
        credit[z, 3] += is_default * exposure_at_default
        credit[z, 4] += loss
        credit[z, 5] += life
        per_path[0, p] += amount[k]
        per_path[1, p] += amount[k] * life
        per_path[2, p] += 1.0
        per_path[3, p] += is_default
        per_path[4, p] += loss
