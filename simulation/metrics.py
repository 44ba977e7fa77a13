"""Fund metrics on simulated outcomes (domain §4.3–§4.5).

Two kinds of function live here:

* per-path metrics (multiples, payback, drawdown, concentration) take arrays whose last axis is time or
  exposure and are vectorised over every leading axis; a NaN anywhere in a row makes that row's result
  NaN, because a path with a missing value has no well-defined metric;
* across-path statistics (volatility, Sharpe, Sortino, VaR, probabilities, summaries) treat every value
  of their input as one sample, drop NaNs first and return NaN, never raise, when too few values remain.

Rates and returns are decimals (0.08 = 8 %); quantiles are percentiles (5 = 5 %) with numpy's
"linear" interpolation throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_QUANTILES: tuple[int, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99)
FAN_CHART_QUANTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
Z_95 = 1.96

FloatOrArray = float | NDArray[np.float64]


# Multiples ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Multiples:
    moic: FloatOrArray  # Σ distributions / Σ contributions, NaN without contributions
    roi: FloatOrArray  # MOIC − 1


def multiples(contributions: ArrayLike, distributions: ArrayLike) -> Multiples:
    """MOIC and ROI per path from flows ``(..., T)``; contributions count by magnitude, so either the
    fund-ledger (+) or the LP-stream (−) sign works."""
    paid_in = np.abs(np.asarray(contributions, dtype=float)).sum(axis=-1)
    received = np.asarray(distributions, dtype=float).sum(axis=-1)
    moic = received / np.where(paid_in > 0.0, paid_in, np.nan)
    return Multiples(moic=_unwrap(moic), roi=_unwrap(moic - 1.0))


def annualised_roi(moic: ArrayLike, years: float) -> FloatOrArray:
    """``MOIC^(1/years) − 1``; NaN for a negative MOIC."""
    if years <= 0.0:
        raise ValueError("years must be positive")
    moic = np.asarray(moic, dtype=float)
    return _unwrap(np.where(moic >= 0.0, moic, np.nan) ** (1.0 / years) - 1.0)


# Payback --------------------------------------------------------------------------------------------


def payback_period(cashflows: ArrayLike, times: ArrayLike) -> FloatOrArray:
    """First time the cumulative net cash of each path ``(..., T)`` is back at or above zero.

    Convention: the cumulative must first go negative (an investment); the recovery at period ``i`` is
    then interpolated linearly inside ``(t_{i−1}, t_i]``:
    ``t_{i−1} + (−cum_{i−1} / cf_i)·(t_i − t_{i−1})``, so [−100, 30, 40, 50] on years 0..3 pays back at
    2.6. NaN if the path never recovers, never goes negative, or holds a NaN.
    """
    flows = np.asarray(cashflows, dtype=float)
    t = np.asarray(times, dtype=float)
    if t.shape != flows.shape[-1:]:
        raise ValueError(f"times must have shape {flows.shape[-1:]}, got {t.shape}")
    if t.size == 0:
        return _unwrap(np.full(flows.shape[:-1], np.nan))
    cumulative = np.cumsum(flows, axis=-1)
    underwater = np.logical_or.accumulate(cumulative < 0.0, axis=-1)
    recovers = np.zeros_like(underwater)
    recovers[..., 1:] = underwater[..., :-1] & (cumulative[..., 1:] >= 0.0)
    paid_back = recovers.any(axis=-1) & ~np.isnan(flows).any(axis=-1)

    period = np.argmax(recovers, axis=-1)[..., np.newaxis]
    before = np.maximum(period - 1, 0)
    shortfall = -np.take_along_axis(cumulative, before, axis=-1)[..., 0]
    inflow = np.take_along_axis(flows, period, axis=-1)[..., 0]
    fraction = np.divide(shortfall, inflow, out=np.full(shortfall.shape, np.nan), where=paid_back)
    start, end = t[before[..., 0]], t[period[..., 0]]
    return _unwrap(start + fraction * (end - start))


def discounted_payback(cashflows: ArrayLike, times: ArrayLike, rate: float) -> FloatOrArray:
    """``payback_period`` of the flows discounted to time 0 at ``rate``."""
    if rate <= -1.0:
        raise ValueError("rate must be greater than -1")
    t = np.asarray(times, dtype=float)
    return payback_period(np.asarray(cashflows, dtype=float) * (1.0 + rate) ** -t, t)


# Risk across paths ----------------------------------------------------------------------------------
#
# Each statistic takes a 1-D sample (NaNs dropped, a float returned) or a 2-D array of NaN-free rows, one
# sample per row (an array with one value per row returned): the bootstrap of the risk report evaluates the
# very same definitions on its resampled rows.


def volatility(x: ArrayLike) -> FloatOrArray:
    """Sample standard deviation (ddof=1); NaN with fewer than two values."""
    rows = _rows(x)
    if rows.shape[1] < 2:
        return _per_row(np.full(len(rows), np.nan), x)
    std = np.std(rows, axis=1, ddof=1)
    # exactly 0 for a constant sample, where subtracting a rounded mean would leave noise of order 1e-17
    return _per_row(np.where(rows.min(axis=1) == rows.max(axis=1), 0.0, std), x)


def sharpe(x: ArrayLike, risk_free_rate: float) -> FloatOrArray:
    """``(mean − r_f) / volatility``; NaN when the volatility is zero or undefined."""
    rows = _rows(x)
    mean = rows.mean(axis=1) if rows.shape[1] else np.full(len(rows), np.nan)
    return _per_row(_ratio(mean - risk_free_rate, np.atleast_1d(volatility(rows))), x)


def sortino(x: ArrayLike, minimum_acceptable_return: float) -> FloatOrArray:
    """``(mean − MAR) / DD`` with downside deviation ``DD = sqrt(mean(min(0, x − MAR)²))`` over all values;
    NaN when nothing falls below the MAR."""
    rows = _rows(x)
    if rows.shape[1] == 0:
        return _per_row(np.full(len(rows), np.nan), x)
    shortfall = np.minimum(0.0, rows - minimum_acceptable_return)
    downside_deviation = np.sqrt(np.mean(shortfall**2, axis=1))
    return _per_row(_ratio(rows.mean(axis=1) - minimum_acceptable_return, downside_deviation), x)


def irr_at_risk(irrs: ArrayLike, alpha: float) -> FloatOrArray:
    """IRR VaR as a level: the ``(1 − α)`` quantile of path IRRs (α = 0.95 gives the 5th percentile)."""
    return _quantile(irrs, 1.0 - alpha, alpha)


def conditional_irr_at_risk(irrs: ArrayLike, alpha: float) -> FloatOrArray:
    """IRR CVaR as a level: the mean of the worst ``⌈(1 − α)·n⌉`` path IRRs."""
    return _tail_mean(irrs, alpha, worst_first=True)


def value_at_risk(losses: ArrayLike, alpha: float) -> FloatOrArray:
    """Capital VaR: the α quantile of path losses, a loss being the share of capital lost per path."""
    return _quantile(losses, alpha, alpha)


def conditional_value_at_risk(losses: ArrayLike, alpha: float) -> FloatOrArray:
    """Capital CVaR: the mean of the worst ``⌈(1 − α)·n⌉`` path losses (the tail by count, so a tail of
    tied values, e.g. many zero losses, is not widened)."""
    return _tail_mean(losses, alpha, worst_first=False)


class Probability(NamedTuple):
    value: FloatOrArray  # NaN when count is 0
    count: int  # non-NaN values (per row) the probability is taken over


def prob_at_least(x: ArrayLike, threshold: float) -> Probability:
    """Share of the non-NaN values ``≥ threshold``, e.g. ``P(LP IRR ≥ hurdle)``."""
    rows = _rows(x)
    share = np.mean(rows >= threshold, axis=1) if rows.shape[1] else np.full(len(rows), np.nan)
    return Probability(_per_row(share, x), rows.shape[1])


def prob_below(x: ArrayLike, threshold: float) -> Probability:
    """Share of the non-NaN values ``< threshold``, e.g. ``P(MOIC < 1)``."""
    rows = _rows(x)
    share = np.mean(rows < threshold, axis=1) if rows.shape[1] else np.full(len(rows), np.nan)
    return Probability(_per_row(share, x), rows.shape[1])


# Drawdown -------------------------------------------------------------------------------------------


def max_drawdown(values: ArrayLike) -> FloatOrArray:
    """Largest fall from a running peak, ``max_t (peak_t − v_t) / peak_t``, per path ``(..., T)``.

    Feed it total value (NAV + cumulative distributions) so that paying a distribution is not a
    drawdown. NaN for a path whose running peak is ever zero or negative, or that holds a NaN.
    """
    series = np.asarray(values, dtype=float)
    if series.shape[-1] == 0:
        return _unwrap(np.full(series.shape[:-1], np.nan))
    peak = np.maximum.accumulate(series, axis=-1)
    positive_peak = np.all(peak > 0.0, axis=-1)
    safe_peak = np.where(peak > 0.0, peak, np.nan)
    return _unwrap(np.where(positive_peak, np.max((safe_peak - series) / safe_peak, axis=-1), np.nan))


# Concentration --------------------------------------------------------------------------------------


def hhi(weights: ArrayLike) -> FloatOrArray:
    """Herfindahl–Hirschman index ``Σ w_i²`` of exposures ``(..., K)`` normalised to shares summing to 1;
    NaN for a row with no exposure."""
    exposure = np.asarray(weights, dtype=float)
    if np.any(exposure < 0.0):
        raise ValueError("exposures must be non-negative")
    total = exposure.sum(axis=-1)
    return _unwrap(np.sum(exposure**2, axis=-1) / np.where(total > 0.0, total, np.nan) ** 2)


def effective_n(weights: ArrayLike) -> FloatOrArray:
    """Effective number of equal exposures, ``1 / HHI``."""
    return _unwrap(1.0 / np.asarray(hhi(weights)))


# Distribution summaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    count: int  # non-NaN values summarised
    nan_count: int
    mean: float
    std: float  # ddof=1
    min: float
    max: float
    quantiles: dict[float, float]  # percentile → value
    standard_error: float  # std / √count
    ci95_half_width: float  # 1.96 · standard error of the mean


def summarize(x: ArrayLike, quantiles: tuple[float, ...] = DEFAULT_QUANTILES) -> Summary:
    """Count, moments, extremes, quantiles and the 95 % confidence half-width of the mean."""
    values = np.asarray(x, dtype=float).ravel()
    sample = values[~np.isnan(values)]
    n = sample.size
    std = volatility(sample)
    standard_error = std / np.sqrt(n) if n else np.nan
    levels = np.percentile(sample, quantiles) if n else np.full(len(quantiles), np.nan)
    return Summary(
        count=n,
        nan_count=values.size - n,
        mean=float(np.mean(sample)) if n else np.nan,
        std=std,
        min=float(np.min(sample)) if n else np.nan,
        max=float(np.max(sample)) if n else np.nan,
        quantiles={q: float(level) for q, level in zip(quantiles, levels, strict=True)},
        standard_error=float(standard_error),
        ci95_half_width=float(Z_95 * standard_error),
    )


def histogram(x: ArrayLike, bins: int | ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``(counts, edges)`` of the non-NaN values, as ``numpy.histogram``."""
    return np.histogram(_sample(x), bins=bins)


def fan_chart(series: ArrayLike, quantiles: tuple[float, ...] = FAN_CHART_QUANTILES) -> NDArray[np.float64]:
    """Percentiles across paths of a ``(P, Y)`` series, shaped ``(len(quantiles), Y)``, ignoring NaNs;
    a column with no value gives NaN."""
    paths = np.asarray(series, dtype=float)
    if paths.ndim != 2:
        raise ValueError(f"series must be (paths, periods), got shape {paths.shape}")
    bands = np.full((len(quantiles), paths.shape[1]), np.nan)
    missing = np.isnan(paths)
    complete = ~missing.any(axis=0)  # numpy's plain percentile is vectorised, its NaN-aware one is not
    partial = ~complete & ~missing.all(axis=0)
    if complete.any():
        bands[:, complete] = np.percentile(paths[:, complete], quantiles, axis=0)
    if partial.any():
        bands[:, partial] = np.nanpercentile(paths[:, partial], quantiles, axis=0)
    return bands


def running_mean_ci(x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Convergence trace over the non-NaN values in order: the mean of the first k values and the
    95 % half-width ``1.96·s_k/√k`` (NaN at k = 1)."""
    sample = _sample(x)
    k = np.arange(1, sample.size + 1)
    centre = np.mean(sample) if sample.size else 0.0  # shifting by the mean keeps the sums accurate
    deviations = sample - centre
    sums, squares = np.cumsum(deviations), np.cumsum(deviations**2)
    mean = centre + sums / k
    variance = np.full(sample.size, np.nan)
    variance[1:] = np.maximum(squares[1:] - sums[1:] ** 2 / k[1:], 0.0) / (k[1:] - 1)
    return mean, Z_95 * np.sqrt(variance / k)


def finite_mean(x: ArrayLike) -> float:
    """The mean of the finite values of ``x``; NaN when there is none."""
    values = np.asarray(x, dtype=float).ravel()
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


# Helpers --------------------------------------------------------------------------------------------


def _sample(x: ArrayLike) -> NDArray[np.float64]:
    """Every value of ``x`` as one flat sample, NaNs dropped."""
    values = np.asarray(x, dtype=float).ravel()
    return values[~np.isnan(values)]


def _rows(x: ArrayLike) -> NDArray[np.float64]:
    """A 1-D sample as one NaN-free row; a 2-D array of rows as it is (its rows must be NaN-free)."""
    values = np.asarray(x, dtype=float)
    return values if values.ndim == 2 else _sample(values)[np.newaxis, :]


def _per_row(values: NDArray[np.float64], x: ArrayLike) -> FloatOrArray:
    """One result per row; a float for a 1-D sample."""
    return values if np.ndim(x) == 2 else float(values[0])


def _ratio(numerator: NDArray[np.float64], denominator: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.divide(numerator, denominator, out=np.full(np.shape(numerator), np.nan), where=denominator > 0.0)


def _quantile(x: ArrayLike, level: float, alpha: float) -> FloatOrArray:
    _check_confidence(alpha)
    rows = _rows(x)
    values = np.quantile(rows, level, axis=1) if rows.shape[1] else np.full(len(rows), np.nan)
    return _per_row(values, x)


def _tail_mean(x: ArrayLike, alpha: float, *, worst_first: bool) -> FloatOrArray:
    """Mean of the ``⌈(1 − α)·n⌉`` lowest (``worst_first``) or highest values of each row."""
    _check_confidence(alpha)
    rows = np.sort(_rows(x), axis=1, kind="stable")  # linear on rows already sorted
    n = rows.shape[1]
    if n == 0:
        return _per_row(np.full(len(rows), np.nan), x)
    k = max(1, math.ceil(round((1.0 - alpha) * n, 9)))
    tail = rows[:, :k] if worst_first else rows[:, n - k:]
    return _per_row(tail.mean(axis=1), x)


def _check_confidence(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie strictly between 0 and 1")


def _unwrap(values: NDArray[np.float64]) -> FloatOrArray:
    """A 0-d result as a float, anything else as the array."""
    return float(values) if np.ndim(values) == 0 else values
