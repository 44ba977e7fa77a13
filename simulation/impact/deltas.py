"""Before/after figures of the fund and their paired differences with confidence intervals.

Means (LP net IRR, fund IRR, MOIC, ROI, carry) and P(hurdle) take the mean of the per-path differences over
the paths where both runs have a value, with the standard error ``sd / sqrt(n)``. Ratios and tail figures
(Sharpe, Sortino, VaR/CVaR, IRR P5) are not path averages: their standard error and interval come from a
paired bootstrap (the same resampled paths for both runs). Before and after figures are those ``aggregate``
reports for each run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import aggregate
from ..config import SimulationConfig
from ..metrics import Z_95
from ..pathmetrics import PathResults
from ..streams import Purpose, generator

BOOTSTRAP_REPLICATES = 100  # as the risk report's bootstrap (``aggregate``)
MEAN_METRICS = {
    "lp_net_irr": "lp_net_irr",
    "fund_irr": "fund_irr",
    "lp_moic": "lp_moic",
    "lp_roi": "lp_roi",
    "gp_carry": "gp_carry",
}
# name of the delta -> figure of ``aggregate._risk_figures``
TAIL_METRICS = {
    "sharpe_ratio": "sharpe",
    "sortino_ratio": "sortino",
    "volatility": "volatility",
    "capital_var_95": "capital_var_0.95",
    "capital_var_99": "capital_var_0.99",
    "capital_cvar_95": "capital_cvar_0.95",
    "capital_cvar_99": "capital_cvar_0.99",
    "lp_irr_p5": "irr_var_0.95",
}


@dataclass(frozen=True)
class MetricDelta:
    before: float
    after: float
    delta: float
    standard_error: float
    ci95_lower: float
    ci95_upper: float


def _from_mean(before: float, after: float, differences: np.ndarray) -> MetricDelta:
    delta = float(differences.mean()) if differences.size else float("nan")
    se = float(np.std(differences, ddof=1) / np.sqrt(differences.size)) if differences.size > 1 else 0.0
    return MetricDelta(before, after, delta, se, delta - Z_95 * se, delta + Z_95 * se)


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]  # as ``metrics.summarize``
    return float(finite.mean()) if finite.size else float("nan")


@dataclass(frozen=True)
class Paired:
    """The paired comparison: each figure's ``MetricDelta``, and the bootstrap replicates of the figures the
    decision reads (``<figure>_before`` / ``<figure>_after``, one value per replicate)."""

    deltas: dict[str, MetricDelta]
    replicates: dict[str, np.ndarray]


def paired(
    config: SimulationConfig,
    base: PathResults,
    candidate: PathResults,
    replicates: int = BOOTSTRAP_REPLICATES,
    memo: dict[Any, Any] | None = None,
) -> Paired:
    """Every headline figure before and after, with the paired delta's standard error and 95 % interval."""
    out: dict[str, MetricDelta] = {}
    for name, column in MEAN_METRICS.items():
        b, c = base.scalars[column], candidate.scalars[column]
        both = np.isfinite(b) & np.isfinite(c)
        out[name] = _from_mean(_mean(b), _mean(c), c[both] - b[both])
    hurdle = config.waterfall.hurdle_rate
    b_irr, c_irr = base.scalars["lp_net_irr"], candidate.scalars["lp_net_irr"]
    both = np.isfinite(b_irr) & np.isfinite(c_irr)
    before_p, after_p = (float(np.mean(x[np.isfinite(x)] >= hurdle)) for x in (b_irr, c_irr))
    out["prob_hurdle"] = _from_mean(
        before_p, after_p, (c_irr[both] >= hurdle).astype(float) - (b_irr[both] >= hurdle).astype(float)
    )
    tails, resampled = _tail_deltas(config, base, candidate, replicates, {} if memo is None else memo)
    out.update(tails)
    return Paired(out, resampled)


def figures(config: SimulationConfig, results: PathResults) -> dict[str, float]:
    """The risk figures of one run exactly as ``aggregate.risk_metrics`` computes its point values."""
    s = results.scalars
    clean = {
        name: values[np.isfinite(values)][np.newaxis, :]
        for name, values in (
            ("irr", s["lp_net_irr"]),
            ("moic", s["lp_moic"]),
            ("drawdown", s["max_drawdown"]),
        )
    }
    return {name: float(values[0]) for name, values in aggregate._risk_figures(config, **clean).items()}


def _tail_deltas(
    config: SimulationConfig, base: PathResults, candidate: PathResults, replicates: int, memo: dict[Any, Any]
) -> tuple[dict[str, MetricDelta], dict[str, np.ndarray]]:
    """``memo`` keeps what depends on the base alone (its figures, its side of the bootstrap) for the next
    candidate against the same base."""
    if "before" not in memo:
        memo["before"] = figures(config, base)
    before, after = memo["before"], figures(config, candidate)
    sb, sc = base.scalars, candidate.scalars
    keep = (
        np.isfinite(sb["lp_net_irr"])
        & np.isfinite(sc["lp_net_irr"])
        & np.isfinite(sb["lp_moic"])
        & np.isfinite(sc["lp_moic"])
    )
    n = int(keep.sum())
    if n < 2 or replicates == 0:
        return (
            {
                name: MetricDelta(
                    before[f], after[f], after[f] - before[f], 0.0, after[f] - before[f], after[f] - before[f]
                )
                for name, f in TAIL_METRICS.items()
            },
            {},
        )

    def resampled(s: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        return aggregate._risk_figures(
            config,
            irr=s["lp_net_irr"][keep][rows],
            moic=s["lp_moic"][keep][rows],
            drawdown=s["max_drawdown"][keep][rows],
        )

    key = (hashlib.sha256(keep.tobytes()).hexdigest(), replicates)
    if key not in memo:
        rows = generator(config.monte_carlo.seed, Purpose.BOOTSTRAP, 1).integers(0, n, (replicates, n))
        memo.clear()
        memo["before"] = before
        memo[key] = rows, resampled(sb, rows)
    rows, rb = memo[key]
    rc = resampled(sc, rows)
    resampled_figures = {
        f"{name}_{side}": figures_[f]
        for name, f in TAIL_METRICS.items()
        for side, figures_ in (("before", rb), ("after", rc))
    }
    resampled_figures["prob_hurdle_before"], resampled_figures["prob_hurdle_after"] = (
        rb["prob_hurdle"],
        rc["prob_hurdle"],
    )
    resampled_figures["lp_net_irr_before"] = sb["lp_net_irr"][keep][rows].mean(axis=1)
    resampled_figures["lp_net_irr_after"] = sc["lp_net_irr"][keep][rows].mean(axis=1)
    out = {}
    for name, f in TAIL_METRICS.items():
        delta = after[f] - before[f]
        spread = rc[f] - rb[f]
        spread = spread[np.isfinite(spread)]
        se = float(np.std(spread, ddof=1)) if spread.size > 1 else 0.0
        lower, upper = np.percentile(spread, (2.5, 97.5)) if spread.size > 1 else (delta, delta)
        # the percentile interval of the paired bootstrap, widened to always contain the point estimate
        out[name] = MetricDelta(
            before[f], after[f], delta, se, float(min(lower, delta)), float(max(upper, delta))
        )
    return out, resampled_figures
