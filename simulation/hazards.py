"""Competing monthly hazards for voluntary exit and default, resolved by integrated intensity.

A loan in series s feels an intensity ``λ(m) = c_k · w_s(m − 1)`` in month m: a per-loan constant
``c_k`` times a weight that depends only on the series' log index at the start of the month. With
``C_s(m) = Σ_{j=1..m} w_s(j − 1)·dt`` and an Exp(1) draw E, the loan's event month after its start
month o is the first m with ``C_s(m) − C_s(o) ≥ E / c_k``. One cumulative sum per (path, series)
therefore serves all its loans, and each loan needs one search, not a coin toss per month:
O(paths·series·months + loans·log months).

* voluntary exit: ``c = λ0_z / I_s(o)^β_a``, ``w = I^β_a``, start o + min hold
  (``exit_thresholds``, ``cumulative_exit_intensity``);
* default: ``c = pd_z``, ``w = exp(−β_d·drawdown) / E[exp(−β_d·drawdown)]``, start o
  (``default_thresholds``, ``cumulative_default_intensity``). Dividing by the weight's expectation at each
  month (``expected_drawdown_weight``) keeps the configured PD the expected annual default rate: the
  drawdown only moves defaults from good paths to bad ones.

Log weights are clipped to ±``MAX_LOG_WEIGHT`` so no exp overflows: sums of 360 monthly weights and
thresholds divided by a tiny base hazard stay finite. The clip binds only after index moves of
``exp(300/β)``, far outside any price path.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import optimize
from scipy.special import ndtr

from simulation.market import DT, MONTHS_PER_YEAR

MAX_LOG_WEIGHT = 300.0


def cumulative_exit_intensity(series_log: np.ndarray, beta: float) -> np.ndarray:
    """``C(m) = Σ_{j=1..m} I(j−1)^β·dt`` per (path, series), shape (P, S, M + 1), 0 at month 0."""
    series_log = np.ascontiguousarray(series_log, dtype=float)
    return _cumulative(series_log, beta, 0.0, np.zeros((series_log.shape[-2], series_log.shape[-1])))


def cumulative_default_intensity(series_log: np.ndarray, beta_d: float, expected_weight: np.ndarray) -> np.ndarray:
    """``D(m) = Σ_{j=1..m} exp(−β_d·dd(j−1)) / E_s(j−1)·dt``, dd = log index minus its running maximum (≤ 0).

    The weight grows in a drawdown, so defaults cluster in falling markets; ``expected_weight`` (S, M + 1)
    is its expectation per series and month (``expected_drawdown_weight``), so the mean intensity is 1.
    """
    series_log = np.ascontiguousarray(series_log, dtype=float)
    return _cumulative(series_log, 0.0, beta_d, np.log(np.broadcast_to(expected_weight, series_log.shape[-2:])))


@njit(cache=True, nogil=True)
def _cumulative(series_log: np.ndarray, beta_a: float, beta_d: float, log_normaliser: np.ndarray) -> np.ndarray:
    """``Σ_{j=1..m} exp(clip(β_a·x(j−1) − β_d·dd(j−1) − log_normaliser(j−1)))·dt`` along the months of each
    (path, series) row, with a leading 0; one of ``β_a``, ``β_d`` is used at a time."""
    n_paths, n_series, n_points = series_log.shape
    out = np.zeros(series_log.shape)
    for p in range(n_paths):
        for s in range(n_series):
            x = series_log[p, s]
            peak, total = x[0], 0.0
            for m in range(1, n_points):
                previous = x[m - 1]
                peak = max(peak, previous)
                log_weight = beta_a * previous - beta_d * (previous - peak) - log_normaliser[s, m - 1]
                total += np.exp(min(max(log_weight, -MAX_LOG_WEIGHT), MAX_LOG_WEIGHT)) * DT
                out[p, s, m] = total
    return out


def expected_drawdown_weight(monthly_drift: float, monthly_sd: float, months: int, beta_d: float,
                             grid_points: int = 512) -> np.ndarray:
    """``E[exp(β_d·D_k)]`` for k = 0..months, D_k the drawdown (running max minus value) of a Gaussian
    random walk of monthly log steps N(monthly_drift, monthly_sd²) started at its maximum.

    Exact on a lattice: D follows the Lindley recursion ``D_k = max(0, D_(k−1) − ξ_k)``, so the law of D is
    carried month by month as a probability vector on a grid of ``grid_points`` steps of h, each step a
    convolution with the lattice law of −ξ and a reflection at 0. The grid spans 8 standard deviations of the
    walk over the whole horizon plus its drift; the weight is clipped like the hazard weights.
    """
    levels = np.zeros(months + 1)
    if monthly_sd == 0.0:
        for k in range(1, months + 1):
            levels[k] = max(0.0, levels[k - 1] - monthly_drift)
        return np.exp(_clip(beta_d * levels))
    top = max(-monthly_drift, 0.0) * months + 8.0 * monthly_sd * np.sqrt(months)
    h = top / (grid_points - 1)
    grid = np.arange(grid_points) * h
    weight = np.exp(_clip(beta_d * grid))
    lowest = int(np.floor((-monthly_drift - 8.0 * monthly_sd) / h))
    offsets = np.arange(lowest, int(np.ceil((-monthly_drift + 8.0 * monthly_sd) / h)) + 1)
    edges = (np.append(offsets, offsets[-1] + 1) - 0.5) * h
    step_law = np.diff(ndtr((edges + monthly_drift) / monthly_sd))  # lattice law of −ξ
    law = np.zeros(grid_points)
    law[0] = 1.0
    means = np.empty(months + 1)
    means[0] = 1.0
    for k in range(1, months + 1):
        spread = np.convolve(law, step_law)  # index i ↔ grid point i + lowest
        position = np.arange(spread.size) + lowest
        law = np.bincount(np.clip(position, 0, grid_points - 1), spread, grid_points)
        means[k] = law @ weight / law.sum()
    return means


def exit_thresholds(
    exponential: np.ndarray, origination_log_index: np.ndarray, beta: float, base_hazard: np.ndarray
) -> np.ndarray:
    """Each loan's exit threshold on the ``cumulative_exit_intensity`` scale: ``E·I_s(o)^β / λ0_z``.

    ``origination_log_index`` is the loan's series log index at its origination month.
    """
    return exponential * np.exp(_clip(beta * np.asarray(origination_log_index))) / base_hazard


def default_thresholds(exponential: np.ndarray, default_hazard: np.ndarray) -> np.ndarray:
    """Each loan's default threshold on the ``cumulative_default_intensity`` scale: ``E / pd_z``.

    A zero hazard gives an infinite threshold: the loan never defaults.
    """
    exponential, default_hazard = np.broadcast_arrays(exponential, default_hazard)
    thresholds = np.full(exponential.shape, np.inf)
    return np.divide(exponential, default_hazard, out=thresholds, where=default_hazard > 0.0)


def first_passage(
    cum: np.ndarray, path: np.ndarray, series: np.ndarray, start: np.ndarray, threshold: np.ndarray
) -> np.ndarray:
    """Smallest m in [start + 1, M] with ``cum[p, s, m] − cum[p, s, start] ≥ threshold``, else M + 1.

    ``cum`` (P, S, M + 1) is non-decreasing along months; the loan arrays are (K,), thresholds are
    non-negative and may be +inf, and a start at or beyond M never passes. The comparison is the
    floating-point one as written, ties included; rounding is monotone, so a binary search over the
    months finds the first month that passes (⌈log2 M⌉ look-ups per loan).
    """
    path, series, start = (np.ascontiguousarray(a, dtype=np.int64) for a in (path, series, start))
    threshold = np.ascontiguousarray(np.broadcast_to(threshold, path.shape), dtype=float)
    return first_passage_months(np.ascontiguousarray(cum), path, series, start, threshold)


@njit(cache=True, nogil=True)
def first_passage_months(cum, path, series, start, threshold):
    months = np.empty(path.size, dtype=np.int64)
    for k in range(path.size):
        months[k] = first_passage_month(cum[path[k], series[k]], start[k], threshold[k])
    return months


@njit(cache=True, nogil=True)
def first_passage_month(row: np.ndarray, start: int, threshold: float) -> int:
    """``first_passage`` for one loan on its series' row of the cumulative intensity."""
    last = row.size - 1
    if start >= last:
        return last + 1
    base = row[start]
    if not row[last] - base >= threshold:
        return last + 1
    low, high = start + 1, last
    while low < high:
        middle = (low + high) // 2
        if row[middle] - base >= threshold:
            high = middle
        else:
            low = middle + 1
    return low


CALIBRATION_WALKS = 4096


def calibrate_exit_hazard(
    drift: np.ndarray, beta_a: float, avg_exit_years: float, min_hold_years: float, max_hold_months: int,
    variance: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Base voluntary-exit intensity λ0 per zone whose median exit age is ``avg_exit_years``.

    A loan of age j months feels ``λ0·w_j``, ``w_j = (I_(o+j−1)/I_o)^β_a``, from month h + 1 on
    (h = round(12·min_hold_years)); it exits by month n with probability ``1 − E[exp(−λ0·S)]``,
    ``S = dt·Σ_{j=h+1..n} w_j``. The median is n = round(12·avg_exit_years) when ``E[exp(−λ0·S)] = 1/2``.

    * Deterministic market (``variance`` 0, I_t = (1+g)^t): ``w_j = q^(j−1)``, q = (1+g)^(β_a/12), so
      ``λ0·S = ln 2`` with the geometric sum ``S = dt·q^h·(q^(n−h) − 1)/(q − 1)`` (dt·(n − h) when q = 1).
    * Stochastic market (log index with annual drift ``ln(1+g) − v/2`` and variance ``v``): the expectation
      is taken over ``CALIBRATION_WALKS`` fixed antithetic walks and solved for λ0 by Brent's method. The
      walks are the same for every run (their own seed), so the calibration depends on the config only.

    Raises ``ValueError`` unless h < n ≤ ``max_hold_months``: a median after maturity cannot be reached.
    """
    hold = round(min_hold_years * MONTHS_PER_YEAR)
    median = round(avg_exit_years * MONTHS_PER_YEAR)
    if median <= hold:
        raise ValueError("the median exit month must come after the minimum holding period")
    if median > max_hold_months:
        raise ValueError(f"a median exit at month {median} falls after the maximum hold of {max_hold_months}")
    drift, variance = np.broadcast_arrays(np.asarray(drift, dtype=float), np.asarray(variance, dtype=float))
    return np.array([_calibrated_hazard(g, v, beta_a, hold, median) for g, v in zip(drift, variance)])


def _calibrated_hazard(drift: float, variance: float, beta_a: float, hold: int, median: int) -> float:
    log_q = beta_a * np.log1p(drift) / MONTHS_PER_YEAR
    if variance == 0.0 or beta_a == 0.0:
        window = median - hold
        geometric = window if log_q == 0.0 else np.expm1(log_q * window) / np.expm1(log_q)
        return float(np.log(2.0) / (DT * np.exp(log_q * hold) * geometric))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(0, spawn_key=(CALIBRATION_WALKS,))))
    half = rng.standard_normal((CALIBRATION_WALKS // 2, median - 1))
    steps = (np.log1p(drift) - variance / 2) / MONTHS_PER_YEAR + np.sqrt(variance * DT) * np.vstack([half, -half])
    log_weight = beta_a * np.concatenate([np.zeros((CALIBRATION_WALKS, 1)), np.cumsum(steps, axis=1)], axis=1)
    exposure = DT * np.exp(_clip(log_weight[:, hold:])).sum(axis=1)  # S per walk, ages hold + 1 .. median
    deterministic = _calibrated_hazard(drift, 0.0, beta_a, hold, median)
    return float(np.exp(optimize.brentq(lambda log_hazard: np.mean(np.exp(-np.exp(log_hazard) * exposure)) - 0.5,
                                        np.log(deterministic) - 5.0, np.log(deterministic) + 5.0, xtol=1e-12)))


def _clip(log_weight: np.ndarray) -> np.ndarray:
    return np.clip(log_weight, -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT)
