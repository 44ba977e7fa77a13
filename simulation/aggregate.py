"""Across-path aggregation: distributions, tail risk, fan charts, credit and concentration."""

from __future__ import annotations

import numpy as np

from . import metrics
from .book import LoanBook
from .config import SimulationConfig, ZONES
from .irr import IrrReason
from .pathmetrics import CREDIT_COLUMNS, PathResults
from .results import (
    FAN_QUANTILES, Concentration, Convergence, FanChart, Histogram, RiskMetrics, RunInfo, SimulationResult,
    TailRisk, ZoneCredit,
)

CONFIDENCE_LEVELS = (0.95, 0.99)
HEADLINE = "lp_net_irr"


def risk_metrics(config: SimulationConfig, lp_irr: np.ndarray, lp_moic: np.ndarray,
                 max_drawdown: np.ndarray) -> RiskMetrics:
    rep = config.reporting
    loss = 1.0 - lp_moic
    tails = tuple(
        TailRisk(confidence=a,
                 irr_var=metrics.irr_at_risk(lp_irr, a),
                 irr_cvar=metrics.conditional_irr_at_risk(lp_irr, a),
                 capital_var=metrics.value_at_risk(loss, a),
                 capital_cvar=metrics.conditional_value_at_risk(loss, a))
        for a in CONFIDENCE_LEVELS)
    mean_drawdown = float(np.nanmean(max_drawdown)) if np.isfinite(max_drawdown).any() else float("nan")
    mean_irr = float(np.nanmean(lp_irr)) if np.isfinite(lp_irr).any() else float("nan")
    return RiskMetrics(
        volatility=metrics.volatility(lp_irr),
        sharpe=metrics.sharpe(lp_irr, rep.risk_free_rate),
        sortino=metrics.sortino(lp_irr, rep.min_acceptable_return),
        calmar=mean_irr / mean_drawdown if mean_drawdown > 0 else float("nan"),
        tails=tails,
        prob_hurdle=metrics.prob_at_least(lp_irr, config.waterfall.hurdle_rate)[0],
        prob_target_irr=metrics.prob_at_least(lp_irr, rep.target_irr)[0],
        prob_target_multiple=metrics.prob_at_least(lp_moic, rep.target_multiple)[0],
        prob_loss=metrics.prob_below(lp_moic, 1.0)[0],
    )


def concentration(config: SimulationConfig, book: LoanBook) -> Concentration:
    names = [r.name for r in config.book.regions]
    zone_exposure = np.bincount(book.zone, book.amount, len(ZONES))
    region_exposure = np.bincount(book.region, book.amount, len(names))
    total = book.amount.sum()
    return Concentration(
        zone_hhi=metrics.hhi(zone_exposure), zone_effective_n=metrics.effective_n(zone_exposure),
        region_hhi=metrics.hhi(region_exposure), region_effective_n=metrics.effective_n(region_exposure),
        loan_hhi=metrics.hhi(book.amount), loan_effective_n=metrics.effective_n(book.amount),
        zone_shares=dict(zip(ZONES, (zone_exposure / total).tolist())),
        region_shares=dict(zip(names, (region_exposure / total).tolist())),
    )


def zone_credit(credit: np.ndarray) -> tuple[ZoneCredit, ...]:
    col = {name: credit[:, i] for i, name in enumerate(CREDIT_COLUMNS)}
    with np.errstate(invalid="ignore", divide="ignore"):
        pd_lifetime = col["defaults"] / col["loans"]
        pd_annual = col["defaults"] / col["loan_years"]
        lgd = col["losses"] / col["exposure_at_default"]
        expected_loss = col["losses"] / col["exposure"]
    return tuple(
        ZoneCredit(zone=z, loans=float(col["loans"][i]), defaults=float(col["defaults"][i]),
                   exposure=float(col["exposure"][i]),
                   pd_lifetime=float(pd_lifetime[i]), pd_annual=float(pd_annual[i]), lgd=float(lgd[i]),
                   expected_loss=float(expected_loss[i]))
        for i, z in enumerate(ZONES))


def _reason_counts(codes: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(codes, return_counts=True)
    return {IrrReason(int(v)).label: int(c) for v, c in zip(values, counts) if v != IrrReason.OK}


def aggregate(config: SimulationConfig, book: LoanBook, results: PathResults, info: RunInfo,
              keep_paths: bool) -> SimulationResult:
    s = results.scalars
    n_paths = len(s[HEADLINE])
    years = np.arange(config.fund.term_years + 1)
    summary = {name: metrics.summarize(values) for name, values in s.items()}
    headline = summary[HEADLINE]
    bins = config.reporting.histogram_bins
    return SimulationResult(
        info=info,
        metrics=summary,
        irr_nan_reasons={name: _reason_counts(codes) for name, codes in results.irr_reasons.items()},
        risk=risk_metrics(config, s[HEADLINE], s["lp_moic"], s["max_drawdown"]),
        fan_charts={name: FanChart(years=years, quantiles=FAN_QUANTILES,
                                   values=metrics.fan_chart(series, FAN_QUANTILES))
                    for name, series in results.yearly.items()},
        histograms={name: Histogram(*metrics.histogram(s[name], bins)) for name in (HEADLINE, "lp_moic")},
        concentration=concentration(config, book),
        credit=zone_credit(results.credit),
        cashflows={name: total / n_paths for name, total in results.cashflows.items()},
        convergence=Convergence(metric=HEADLINE, standard_error=headline.standard_error,
                                ci95_half_width=headline.ci95_half_width),
        paths=dict(s) if keep_paths else None,
    )
