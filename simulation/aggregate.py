"""Across-path aggregation: distributions, tail risk, fan charts, credit and concentration."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import metrics
from .book import LoanBook
from .config import SimulationConfig, ZONES
from .irr import IrrReason
from .pathmetrics import CREDIT_COLUMNS, PathResults
from .results import (
    FAN_QUANTILES, RISK_SCALARS, Concentration, Convergence, FanChart, Histogram, RiskMetrics, RunInfo,
    SimulationResult, TailRisk, ZoneCredit,
)
from .streams import Purpose, generator

CONFIDENCE_LEVELS = (0.95, 0.99)
HEADLINE = "lp_net_irr"
BOOTSTRAP_REPLICATES = 100
BOOTSTRAP_THREADS = 2  # a replicate's figures depend on its own row alone, so the split changes no number
BOOTSTRAP_BATCH_VALUES = 2_000_000  # resampled values held at once per metric: bounds memory at any path count


def risk_metrics(config: SimulationConfig, lp_irr: np.ndarray, lp_moic: np.ndarray,
                 max_drawdown: np.ndarray) -> RiskMetrics:
    """The risk report across paths, each figure with its bootstrap standard error.

    Capital at risk is the share of paid-in capital the LPs lose on a path, ``max(0, 1 − LP MOIC)``: a path
    that returns more than its capital loses nothing (a gain is not a negative loss). The standard errors
    come from ``BOOTSTRAP_REPLICATES`` resamples of the paths, drawn from the run's own seed.
    """
    samples = {"irr": lp_irr, "moic": lp_moic, "drawdown": max_drawdown}
    clean = {name: values[np.isfinite(values)] for name, values in samples.items()}
    point = _risk_figures(config, **{name: values[np.newaxis, :] for name, values in clean.items()})
    rng = generator(config.monte_carlo.seed, Purpose.BOOTSTRAP)
    batch = max(1, BOOTSTRAP_BATCH_VALUES // max(len(values) for values in clean.values()))
    batches = []
    with ThreadPoolExecutor(BOOTSTRAP_THREADS) as threads:  # sorting and partitioning release the GIL
        for start in range(0, BOOTSTRAP_REPLICATES, batch):
            replicates = min(batch, BOOTSTRAP_REPLICATES - start)
            resampled = {name: values[rng.integers(0, len(values), (replicates, len(values)))]
                         for name, values in clean.items()}
            halves = np.array_split(np.arange(replicates), min(BOOTSTRAP_THREADS, replicates))
            batches += threads.map(lambda rows: _risk_figures(
                config, **{name: values[rows] for name, values in resampled.items()}), halves)
    spread = {name: np.concatenate([figures[name] for figures in batches]) for name in point}
    return _risk_metrics({name: float(values[0]) for name, values in point.items()},
                         standard_errors=_risk_metrics({name: _standard_error(values)
                                                        for name, values in spread.items()}))


def _risk_figures(config: SimulationConfig, irr: np.ndarray, moic: np.ndarray,
                  drawdown: np.ndarray) -> dict[str, np.ndarray]:
    """Every risk figure for each row of NaN-free path samples ``(rows, paths)``."""
    rep = config.reporting
    irr = np.sort(irr, axis=1)  # sorted once: the quantiles and tail means below then cost O(n)
    loss = np.sort(np.maximum(0.0, 1.0 - moic), axis=1)
    figures = {
        "volatility": metrics.volatility(irr),
        "sharpe": metrics.sharpe(irr, rep.risk_free_rate),
        "sortino": metrics.sortino(irr, rep.min_acceptable_return),
        "calmar": _calmar(irr, drawdown),
        "prob_hurdle": metrics.prob_at_least(irr, config.waterfall.hurdle_rate).value,
        "prob_target_irr": metrics.prob_at_least(irr, rep.target_irr).value,
        "prob_target_multiple": metrics.prob_at_least(moic, rep.target_multiple).value,
        "prob_loss": metrics.prob_below(moic, 1.0).value,
    }
    for a in CONFIDENCE_LEVELS:
        figures[f"irr_var_{a}"] = metrics.irr_at_risk(irr, a)
        figures[f"irr_cvar_{a}"] = metrics.conditional_irr_at_risk(irr, a)
        figures[f"capital_var_{a}"] = metrics.value_at_risk(loss, a)
        figures[f"capital_cvar_{a}"] = metrics.conditional_value_at_risk(loss, a)
    return figures


def _calmar(irr: np.ndarray, drawdown: np.ndarray) -> np.ndarray:
    """Mean LP IRR over mean maximum drawdown; NaN without drawdown."""
    if irr.shape[1] == 0 or drawdown.shape[1] == 0:
        return np.full(len(irr), np.nan)
    mean_drawdown = drawdown.mean(axis=1)
    return np.divide(irr.mean(axis=1), mean_drawdown, out=np.full(len(irr), np.nan), where=mean_drawdown > 0)


def _standard_error(replicates: np.ndarray) -> float:
    finite = replicates[np.isfinite(replicates)]
    return float(np.std(finite, ddof=1)) if finite.size >= 2 else float("nan")


def _risk_metrics(figures: dict[str, float], standard_errors: RiskMetrics | None = None) -> RiskMetrics:
    tails = tuple(TailRisk(confidence=a, irr_var=figures[f"irr_var_{a}"], irr_cvar=figures[f"irr_cvar_{a}"],
                           capital_var=figures[f"capital_var_{a}"], capital_cvar=figures[f"capital_cvar_{a}"])
                  for a in CONFIDENCE_LEVELS)
    scalars = {name: figures[name] for name in RISK_SCALARS}
    return RiskMetrics(**scalars, tails=tails, standard_errors=standard_errors)


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
