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
from scipy import optimize
from scipy.special import ndtr

from simulation.market import DT, MONTHS_PER_YEAR

MAX_LOG_WEIGHT = 300.0


def cumulative_exit_intensity(series_log: np.ndarray, beta: float) -> np.ndarray:
    """``C(m) = Σ_{j=1..m} I(j−1)^β·dt`` per (path, series), shape (P, S, M + 1), 0 at month 0."""
    return _cumulative(beta * series_log)


def cumulative_default_intensity(series_log: np.ndarray, beta_d: float, expected_weight: np.ndarray) -> np.ndarray:
    """``D(m) = Σ_{j=1..m} exp(−β_d·dd(j−1)) / E_s(j−1)·dt``, dd = log index minus its running maximum (≤ 0).

    The weight grows in a drawdown, so defaults cluster in falling markets; ``expected_weight`` (S, M + 1)
    is its expectation per series and month (``expected_drawdown_weight``), so the mean intensity is 1.
    """
    drawdown = series_log - np.maximum.accumulate(series_log, axis=-1)
    return _cumulative(-beta_d * drawdown - np.log(expected_weight))


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
    floating-point one as written, ties included. Loans that never pass by month M are settled by
    one look-up; the rest share a vectorised binary search over the months (⌈log2 M⌉ gathers).
    """
    _, n_series, n_points = cum.shape
    last_month = n_points - 1
    flat = cum.reshape(-1)
    path, series, start = (np.asarray(a, dtype=np.int64) for a in (path, series, start))
    row_start = (path * n_series + series) * n_points
    first = np.minimum(start, last_month)
    target = _smallest_value_reaching(flat[row_start + first], np.asarray(threshold, dtype=float))
    month = np.full(path.shape, n_points, dtype=np.int64)
    passing = np.flatnonzero((start < last_month) & (flat[row_start + last_month] >= target))
    rows, goal = row_start[passing], target[passing]
    low, high = first[passing] + 1, np.full(passing.shape, last_month)  # answer in [low, high]
    while passing.size and np.any(low < high):
        middle = (low + high) // 2
        reached = flat[rows + middle] >= goal
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle + 1)
    month[passing] = low
    return month


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


def _cumulative(log_weight: np.ndarray) -> np.ndarray:
    """``Σ_{j=1..m} exp(log_weight(j−1))·dt`` along the last axis, with a leading 0 at month 0."""
    cum = np.zeros(log_weight.shape)
    np.cumsum(np.exp(_clip(log_weight[..., :-1])) * DT, axis=-1, out=cum[..., 1:])
    return cum


def _clip(log_weight: np.ndarray) -> np.ndarray:
    return np.clip(log_weight, -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT)


def _smallest_value_reaching(base: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Smallest float x with ``x − base ≥ threshold`` in floating point (base, threshold ≥ 0).

    ``base + threshold`` rounds to within one step of it, so one step up, then one step down, fixes it.
    """
    target = base + threshold
    target = np.where(target - base < threshold, np.nextafter(target, np.inf), target)
    below = np.nextafter(target, -np.inf)
    return np.where(below - base >= threshold, below, target)
